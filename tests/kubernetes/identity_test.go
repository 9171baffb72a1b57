package kubernetes_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshd/meshd/tests/harness"
)

// TestSentryKubernetes proves sentry's kubernetes token validator against
// the real kube-apiserver: identities come from TokenReview and the bound
// pod, sidecars join with TokenRequest tokens and call each other, every
// refusal is a clear gRPC status with the reason in sentry's log, sentry
// names missing RBAC, and a kubelet-style token swap heals a sidecar
// without a restart.
func TestSentryKubernetes(t *testing.T) {
	k := harness.StartKube(t)
	b := harness.Build(t)
	cs := k.Client()
	ctx := context.Background()

	identNamespace(t, cs, "shop")
	saOrders := identServiceAccount(t, cs, "shop", "orders")
	identServiceAccount(t, cs, "shop", "payments")
	identServiceAccount(t, cs, "shop", "inventory")
	podOrders := identPod(t, cs, "shop", "orders-0", "orders", map[string]string{"meshd.io/app-id": "orders"})
	// payments carries Dapr's annotation, which sentry accepts too.
	podPayments := identPod(t, cs, "shop", "payments-0", "payments", map[string]string{"dapr.io/app-id": "payments"})

	kubeconfig := identSentryKubeconfig(t, k, cs, "sentry")
	// A short workload TTL so the token-rotation step can let certificates
	// expire; sidecars renew at half-life by their SVID.
	sentry := harness.StartSentry(t, b, "", "--token-validator", "kubernetes", "--kubeconfig", kubeconfig, "--workload-ttl", "10s")
	if !identLogHas(sentry.Log(), "token validator kubernetes", "audience=meshd") {
		t.Fatalf("sentry did not log its validator and audience:\n%s", sentry.Log())
	}

	dir := t.TempDir()
	tokenFile := func(name, tok string) string {
		p := filepath.Join(dir, name+".token")
		harness.WriteToken(t, p, tok)
		return p
	}
	ordersTok := identTokenRequest(t, cs, "shop", "orders", podOrders, time.Hour, "meshd")
	paymentsTok := identTokenRequest(t, cs, "shop", "payments", podPayments, time.Hour, "meshd")

	echo := harness.StartEcho(t, b, "payments", 0)
	paymentsPorts := harness.NewSidecarPorts(t)
	resolver := filepath.Join(dir, "apps.yaml")
	harness.WriteStatic(t, resolver, harness.StaticApp{AppID: "payments", Namespace: "shop", Addresses: []string{paymentsPorts.InternalAddr()}})
	_ = harness.StartSidecar(t, b, sentry, harness.SidecarConfig{AppID: "payments", Namespace: "shop", AppPort: echo.Port,
		Ports: paymentsPorts, ResolverFile: resolver, TokenFile: tokenFile("payments", paymentsTok)})
	orders := harness.StartSidecar(t, b, sentry, harness.SidecarConfig{AppID: "orders", Namespace: "shop",
		ResolverFile: resolver, TokenFile: tokenFile("orders", ordersTok)})

	// call invokes payments through sidecar from and returns the caller
	// identity the callee app saw.
	call := func(ctx context.Context, from *harness.Sidecar) (string, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, from.HTTPURL()+"/v1.0/invoke/payments/method/hello", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("invoke: %s: %s", resp.Status, body)
		}
		var got struct {
			CallerAppID, CallerNamespace string
		}
		if err := json.Unmarshal(body, &got); err != nil {
			return "", err
		}
		return got.CallerNamespace + "/" + got.CallerAppID, nil
	}

	t.Run("pods join with TokenRequest tokens and call each other", func(t *testing.T) {
		got, err := call(ctx, orders)
		if err != nil {
			t.Fatal(err)
		}
		if got != "shop/orders" {
			t.Fatalf("payments saw caller %s, want shop/orders", got)
		}
		// The callee's identity is checked by the caller sidecar
		// (spiffe://cluster.local/ns/shop/payments), so the call above
		// proved both pods' identities over mTLS.
	})

	t.Run("refusals", func(t *testing.T) {
		signer := newIdentSigner(t, sentry)
		// A second pod of orders, deleted and recreated under the same
		// name: its old token names the old UID.
		oldPod := identPod(t, cs, "shop", "orders-1", "orders", map[string]string{"meshd.io/app-id": "orders"})
		oldTok := identTokenRequest(t, cs, "shop", "orders", oldPod, time.Hour, "meshd")
		if err := cs.CoreV1().Pods("shop").Delete(ctx, "orders-1", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
			t.Fatal(err)
		}
		newPod := identPod(t, cs, "shop", "orders-1", "orders", map[string]string{"meshd.io/app-id": "orders"})
		if newPod.UID == oldPod.UID {
			t.Fatal("recreated pod kept its UID")
		}
		// The minting is right: a token signed now, by the test, in the API
		// server's shape, is accepted; so the expired one below is refused
		// for its expiry alone. (The API server allows a minute of leeway.)
		now := time.Now()
		minted := identMintToken(t, k, saOrders, podOrders, "meshd", now.Add(-time.Minute), now.Add(10*time.Minute))
		if got, err := signer.sign(ctx, minted, "shop", "orders"); err != nil || got != "spiffe://cluster.local/ns/shop/orders" {
			t.Fatalf("a fresh token minted with the API server's key: %q, %v", got, err)
		}
		// And the TokenRequest tokens sign exactly the pod's identity.
		if got, err := signer.sign(ctx, ordersTok, "shop", "orders"); err != nil || got != "spiffe://cluster.local/ns/shop/orders" {
			t.Fatalf("orders' token: %q, %v", got, err)
		}
		if got, err := signer.sign(ctx, paymentsTok, "shop", "payments"); err != nil || got != "spiffe://cluster.local/ns/shop/payments" {
			t.Fatalf("payments' token (dapr.io/app-id): %q, %v", got, err)
		}

		noApp := identPod(t, cs, "shop", "unlabelled-0", "orders", nil)
		cases := []struct {
			name    string
			tok     string
			ns, app string
			code    codes.Code
			reason  string // in the status and in sentry's log line
		}{
			{"token of app orders asking for payments", ordersTok, "shop", "payments", codes.PermissionDenied, "is for app"},
			{"token of namespace shop asking for another namespace", ordersTok, "default", "orders", codes.PermissionDenied, "is for app"},
			{"pod deleted and recreated with the same name", oldTok, "shop", "orders", codes.Unauthenticated, "does not match service account pod ref claim"},
			{"expired token", identMintToken(t, k, saOrders, podOrders, "meshd", now.Add(-2*time.Hour), now.Add(-time.Hour)),
				"shop", "orders", codes.Unauthenticated, "has expired"},
			{"wrong audience", identTokenRequest(t, cs, "shop", "orders", podOrders, time.Hour, "vault"),
				"shop", "orders", codes.Unauthenticated, "is invalid for the target audiences"},
			{"API server's default audience", identTokenRequest(t, cs, "shop", "orders", podOrders, time.Hour),
				"shop", "orders", codes.Unauthenticated, "is invalid for the target audiences"},
			{"token not bound to a pod", identTokenRequest(t, cs, "shop", "orders", nil, time.Hour, "meshd"),
				"shop", "orders", codes.Unauthenticated, "not bound to a pod"},
			{"pod without an app ID annotation", identTokenRequest(t, cs, "shop", "orders", noApp, time.Hour, "meshd"),
				"shop", "orders", codes.PermissionDenied, "has no app ID"},
			{"garbage", "not-a-jwt", "shop", "orders", codes.Unauthenticated, "refused the token"},
			{"no token", "", "shop", "orders", codes.Unauthenticated, "missing"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				got, err := signer.sign(ctx, c.tok, c.ns, c.app)
				if err == nil {
					t.Fatalf("signed %s", got)
				}
				st := status.Convert(err)
				t.Logf("%s: %s", st.Code(), st.Message())
				if st.Code() != c.code || !strings.Contains(st.Message(), c.reason) {
					t.Fatalf("status %s %q, want %s mentioning %q", st.Code(), st.Message(), c.code, c.reason)
				}
				want := []string{"certificate request refused", "code=" + c.code.String(), "app_id=" + c.app, "namespace=" + c.ns, c.reason}
				harness.WaitFor(t, 5*time.Second, func(context.Context) error {
					if !identLogHas(sentry.Log(), want...) {
						return fmt.Errorf("sentry logged no refusal with %q", want)
					}
					return nil
				})
			})
		}
		// The recreated pod's own token works: the refusal was the old UID.
		newTok := identTokenRequest(t, cs, "shop", "orders", newPod, time.Hour, "meshd")
		if _, err := signer.sign(ctx, newTok, "shop", "orders"); err != nil {
			t.Fatalf("token of the recreated pod: %v", err)
		}
	})

	t.Run("a sidecar with another app's token never becomes ready", func(t *testing.T) {
		thief := harness.StartSidecar(t, b, sentry, harness.SidecarConfig{AppID: "payments", Namespace: "shop",
			ResolverFile: resolver, TokenFile: tokenFile("thief", ordersTok), NoWait: true})
		harness.WaitFor(t, 15*time.Second, func(context.Context) error {
			if !strings.Contains(thief.Log(), "PermissionDenied") {
				return fmt.Errorf("the sidecar did not report sentry's PermissionDenied:\n%s", thief.Log())
			}
			return nil
		})
		resp, err := http.Get(thief.HTTPURL() + "/v1.0/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				t.Fatal("a sidecar holding orders' token is ready as payments")
			}
		}
	})

	t.Run("RBAC: sentry names what it lacks", func(t *testing.T) {
		for _, c := range []struct{ grant, missing string }{
			{"", `"create" tokenreviews.authentication.k8s.io`},
			{"tokenreviews", `"get" pods`},
		} {
			var kc string
			if c.grant == "" {
				identServiceAccount(t, cs, "meshd-system", "sentry-bare")
				kc = filepath.Join(t.TempDir(), "bare.kubeconfig")
				k.WriteKubeconfig(kc, identTokenRequest(t, cs, "meshd-system", "sentry-bare", nil, time.Hour))
			} else {
				kc = identSentryKubeconfig(t, k, cs, "sentry-half", c.grant)
			}
			p := harness.Start(t, "sentry-rbac", b.Sentry, "--data-dir", filepath.Join(t.TempDir(), "d"),
				"--listen", "127.0.0.1:0", "--health-listen", "", "--token-validator", "kubernetes", "--kubeconfig", kc)
			if err := p.Wait(30 * time.Second); err == nil {
				t.Fatalf("sentry without %s started (or exited 0):\n%s", c.missing, p.Log())
			}
			if !strings.Contains(p.Log(), "RBAC") || !strings.Contains(p.Log(), c.missing) {
				t.Fatalf("sentry's start error does not name %s:\n%s", c.missing, p.Log())
			}
		}
		// --ca-store kubernetes without the store's RBAC: named at start.
		p := harness.Start(t, "sentry-rbac-store", b.Sentry, "--data-dir", filepath.Join(t.TempDir(), "d"),
			"--listen", "127.0.0.1:0", "--health-listen", "", "--token-validator", "kubernetes", "--kubeconfig", kubeconfig,
			"--ca-store", "kubernetes")
		if err := p.Wait(30 * time.Second); err == nil || !strings.Contains(p.Log(), `RBAC: sentry may not "get" secrets in namespace meshd-system`) {
			t.Fatalf("sentry without the CA store's RBAC (exit %v):\n%s", err, p.Log())
		}
		// An API server that is not there: a clear error at start.
		down := filepath.Join(t.TempDir(), "down.kubeconfig")
		if err := os.WriteFile(down, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:%d", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, harness.FreePort(t))), 0o600); err != nil {
			t.Fatal(err)
		}
		p = harness.Start(t, "sentry-down", b.Sentry, "--data-dir", filepath.Join(t.TempDir(), "d"),
			"--listen", "127.0.0.1:0", "--health-listen", "", "--token-validator", "kubernetes", "--kubeconfig", down)
		if err := p.Wait(45 * time.Second); err == nil || !strings.Contains(p.Log(), "cannot check sentry's permissions with the API server") {
			t.Fatalf("sentry with no API server (exit %v):\n%s", err, p.Log())
		}

		// Taken away while sentry runs: bootstrap answers Unavailable and
		// names the verb (nothing is signed; the sidecar retries).
		kc := identSentryKubeconfig(t, k, cs, "sentry-live")
		live := harness.StartSentry(t, b, "", "--token-validator", "kubernetes", "--kubeconfig", kc)
		signer := newIdentSigner(t, live)
		if _, err := signer.sign(ctx, ordersTok, "shop", "orders"); err != nil {
			t.Fatalf("with full RBAC: %v", err)
		}
		if err := cs.RbacV1().ClusterRoleBindings().Delete(ctx, "sentry-live-pods", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		harness.WaitFor(t, 20*time.Second, func(ctx context.Context) error {
			_, err := signer.sign(ctx, ordersTok, "shop", "orders")
			st := status.Convert(err)
			if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), `"get" pods in namespace shop`) {
				return fmt.Errorf("without get pods: %v", err)
			}
			return nil
		})
	})

	t.Run("token rotation by file swap heals a sidecar without a restart", func(t *testing.T) {
		inv := identPod(t, cs, "shop", "inventory-0", "inventory", map[string]string{"meshd.io/app-id": "inventory"})
		saInv, err := cs.CoreV1().ServiceAccounts("shop").Get(ctx, "inventory", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// The first token is a genuine one whose life ends within ~20s (its
		// exp is 40s ago; the API server allows a minute of leeway).
		now := time.Now()
		first := identMintToken(t, k, saInv, inv, "meshd", now.Add(-10*time.Minute), now.Add(-40*time.Second))
		invalidFrom := now.Add(20 * time.Second)
		path := tokenFile("inventory", first)
		sc := harness.StartSidecar(t, b, sentry, harness.SidecarConfig{AppID: "inventory", Namespace: "shop",
			ResolverFile: resolver, TokenFile: path})
		pid := sc.Pid()

		// sentry goes away until the certificate (10s) and the token have
		// expired: the sidecar turns not ready.
		if err := sentry.Stop(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		harness.WaitFor(t, 30*time.Second, func(context.Context) error {
			resp, err := http.Get(sc.HTTPURL() + "/v1.0/healthz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				return fmt.Errorf("healthz %d with an expired certificate", resp.StatusCode)
			}
			return nil
		})
		time.Sleep(time.Until(invalidFrom) + time.Second)

		// sentry is back, but the token in the file has expired: refused.
		sentry.Restart(t)
		harness.WaitFor(t, 45*time.Second, func(context.Context) error {
			if !identLogHas(sentry.Log(), "certificate request refused", "app_id=inventory", "has expired") {
				return fmt.Errorf("sentry has not refused inventory's expired token yet")
			}
			return nil
		})
		resp, err := http.Get(sc.HTTPURL() + "/v1.0/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				t.Fatal("ready on an expired token")
			}
		}

		// The kubelet writes a fresh token: the sidecar reads it on its next
		// bootstrap attempt and heals, same process.
		harness.WriteToken(t, path, identTokenRequest(t, cs, "shop", "inventory", inv, time.Hour, "meshd"))
		harness.WaitHTTP(t, sc.HTTPURL()+"/v1.0/healthz", http.StatusNoContent, 60*time.Second)
		if sc.Exited() || sc.Pid() != pid {
			t.Fatal("the sidecar restarted")
		}
		// payments and orders re-bootstrapped with their (still valid)
		// tokens meanwhile; the healed sidecar calls payments as itself.
		harness.WaitFor(t, 60*time.Second, func(ctx context.Context) error {
			got, err := call(ctx, sc)
			if err != nil {
				return err
			}
			if got != "shop/inventory" {
				return fmt.Errorf("payments saw caller %s, want shop/inventory", got)
			}
			return nil
		})
	})
}
