package kubernetes_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/tests/harness"
)

// TestSentryReplicasOneSecret runs two sentry replicas on one CA Secret
// (--ca-store kubernetes) against the real API server: both sign (each
// sidecar knows only its own replica), a root rotation staged on the
// leader is carried out by the leader alone while the follower follows the
// Secret, calls between the two sidecars keep flowing with 0 failures, and
// the trust-bundle ConfigMap in the pods' namespace follows every step.
func TestSentryReplicasOneSecret(t *testing.T) {
	k := harness.StartKube(t)
	b := harness.Build(t)
	cs := k.Client()

	identNamespace(t, cs, "shop")
	identServiceAccount(t, cs, "shop", "orders")
	identServiceAccount(t, cs, "shop", "payments")
	podOrders := identPod(t, cs, "shop", "orders-0", "orders", map[string]string{"meshd.io/app-id": "orders"})
	podPayments := identPod(t, cs, "shop", "payments-0", "payments", map[string]string{"meshd.io/app-id": "payments"})
	kubeconfig := identSentryKubeconfig(t, k, cs, "sentry", "tokenreviews", "pods", "store")

	start := func(id string) *harness.Sentry {
		return harness.StartSentry(t, b, "", "--token-validator", "kubernetes", "--kubeconfig", kubeconfig,
			"--ca-store", "kubernetes", "--ca-secret", "meshd-system/meshd-sentry-ca", "--replica-id", id,
			"--workload-ttl", "20s", "--rotation-propagation-delay", "8s", "--rotation-retire-margin", "2s")
	}
	s1 := start("r1")
	s2 := start("r2")
	if !strings.Contains(s2.Log(), "took the CA from the Secret") {
		t.Fatalf("the second replica did not take the CA from the Secret:\n%s", s2.Log())
	}
	roots := func(path string) ([]*x509.Certificate, error) {
		pemBytes, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		return certs.ParseCertsPEM(pemBytes)
	}
	same := func(a, b []*x509.Certificate) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if !a[i].Equal(b[i]) {
				return false
			}
		}
		return true
	}
	r1, err := roots(s1.BundleFile())
	if err != nil {
		t.Fatal(err)
	}
	if r2, err := roots(s2.BundleFile()); err != nil || len(r1) != 1 || !same(r1, r2) {
		t.Fatalf("replicas do not share one root: %d vs %v (%v)", len(r1), r2, err)
	}
	oldRoot := r1[0]

	// The leader, from the Lease.
	holder := func(ctx context.Context) (*harness.Sentry, *harness.Sentry, error) {
		l, err := cs.CoordinationV1().Leases("meshd-system").Get(ctx, "meshd-sentry-ca", metav1.GetOptions{})
		if err != nil {
			return nil, nil, err
		}
		switch h := l.Spec.HolderIdentity; {
		case h != nil && *h == "r1":
			return s1, s2, nil
		case h != nil && *h == "r2":
			return s2, s1, nil
		default:
			return nil, nil, fmt.Errorf("lease holder %v", h)
		}
	}
	var leader, follower *harness.Sentry
	harness.WaitFor(t, 30*time.Second, func(ctx context.Context) error {
		var err error
		leader, follower, err = holder(ctx)
		return err
	})

	// The bundle ConfigMap in the pods' namespace.
	cmRoots := func(ctx context.Context) ([]*x509.Certificate, error) {
		cm, err := cs.CoreV1().ConfigMaps("shop").Get(ctx, "meshd-trust-bundle", metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return certs.ParseCertsPEM([]byte(cm.Data["ca.crt"]))
	}
	waitBundles := func(what string, want func([]*x509.Certificate) bool) {
		t.Helper()
		harness.WaitFor(t, 45*time.Second, func(ctx context.Context) error {
			for _, s := range []*harness.Sentry{s1, s2} {
				got, err := roots(s.BundleFile())
				if err != nil || !want(got) {
					return fmt.Errorf("%s: replica %s's bundle has %d roots (%v)", what, s.Addr, len(got), err)
				}
			}
			got, err := cmRoots(ctx)
			if err != nil || !want(got) {
				return fmt.Errorf("%s: ConfigMap shop/meshd-trust-bundle has %d roots (%v)", what, len(got), err)
			}
			return nil
		})
	}
	waitBundles("at start", func(r []*x509.Certificate) bool { return same(r, r1) })

	// Each sidecar knows one replica: both replicas sign.
	dir := t.TempDir()
	tokenFile := func(name, tok string) string {
		p := filepath.Join(dir, name+".token")
		harness.WriteToken(t, p, tok)
		return p
	}
	echo := harness.StartEcho(t, b, "payments", 0)
	paymentsPorts := harness.NewSidecarPorts(t)
	resolver := filepath.Join(dir, "apps.yaml")
	harness.WriteStatic(t, resolver, harness.StaticApp{AppID: "payments", Namespace: "shop", Addresses: []string{paymentsPorts.InternalAddr()}})
	harness.StartSidecar(t, b, s1, harness.SidecarConfig{AppID: "payments", Namespace: "shop", AppPort: echo.Port, Ports: paymentsPorts,
		ResolverFile: resolver, TokenFile: tokenFile("payments", identTokenRequest(t, cs, "shop", "payments", podPayments, time.Hour, "meshd"))})
	orders := harness.StartSidecar(t, b, s2, harness.SidecarConfig{AppID: "orders", Namespace: "shop",
		ResolverFile: resolver, TokenFile: tokenFile("orders", identTokenRequest(t, cs, "shop", "orders", podOrders, time.Hour, "meshd"))})

	// Traffic: idempotent calls orders -> payments, every failure counted.
	load := identStartLoad(orders.HTTPURL() + "/v1.0/invoke/payments/method/hello")
	defer load.stop()
	time.Sleep(2 * time.Second)

	// Stage a rotation on the leader's data directory.
	out, err := exec.Command(b.Sentry, "rotate-root", "--data-dir", leader.DataDir).CombinedOutput()
	if err != nil {
		t.Fatalf("rotate-root: %v\n%s", err, out)
	}
	// (1) the new root is published by every replica and in the ConfigMap;
	waitBundles("new root published", func(r []*x509.Certificate) bool { return len(r) == 2 && r[0].Equal(oldRoot) })
	// (2) signing switches, on the follower by taking the leader's state;
	harness.WaitFor(t, 30*time.Second, func(context.Context) error {
		if !strings.Contains(leader.Log(), "signing switched to the new issuer") {
			return fmt.Errorf("the leader has not switched")
		}
		if !strings.Contains(follower.Log(), "signing with the replicated active generation") {
			return fmt.Errorf("the follower has not switched")
		}
		return nil
	})
	// (3) the old root is retired everywhere.
	waitBundles("old root retired", func(r []*x509.Certificate) bool { return len(r) == 1 && !r[0].Equal(oldRoot) })
	// Certificates renew under the new root for a while.
	time.Sleep(8 * time.Second)
	load.stop()
	load.check(t, "a root rotation across two replicas")
	for _, step := range []string{"root rotation started", "signing switched to the new issuer", "old root removed from the bundle"} {
		if !strings.Contains(leader.Log(), step) {
			t.Errorf("the leader did not log %q", step)
		}
		if strings.Contains(follower.Log(), step) {
			t.Errorf("the follower advanced the rotation itself (%q)", step)
		}
	}

	// Failover mid-rotation: a second rotation is staged (in the Secret);
	// the leader takes it and stops once the new root is published (before
	// the switch). The
	// other replica takes the Lease and carries out the switch and the
	// retirement from the Secret's state; the stopped one comes back as a
	// restarted pod would, now a follower. Calls keep flowing.
	r2 := identMustRoots(t, leader.BundleFile())
	load = identStartLoad(orders.HTTPURL() + "/v1.0/invoke/payments/method/hello")
	defer load.stop()
	// This time staged through the Secret, as an operator who does not
	// know the leader would: the leader takes it.
	if out, err := exec.Command(b.Sentry, "rotate-root", "--ca-secret", "meshd-system/meshd-sentry-ca",
		"--kubeconfig", k.Kubeconfig).CombinedOutput(); err != nil {
		t.Fatalf("rotate-root --ca-secret: %v\n%s", err, out)
	}
	waitBundles("second new root published", func(r []*x509.Certificate) bool { return len(r) == 2 && r[0].Equal(r2[0]) })
	if err := leader.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(leader.Log(), "took the rotation staged in the Secret") {
		t.Fatalf("the leader did not take the rotation from the Secret:\n%s", leader.Log())
	}
	if strings.Contains(follower.Log(), "took the rotation staged in the Secret") {
		t.Fatal("the follower took the staged rotation")
	}
	if n := strings.Count(leader.Log(), "signing switched to the new issuer"); n != 1 {
		t.Fatalf("the leader switched %d times before it stopped (test timing: want the second switch still pending)", n)
	}
	old := leader
	harness.WaitFor(t, 30*time.Second, func(ctx context.Context) error {
		l, _, err := holder(ctx)
		if err != nil {
			return err
		}
		if l == old {
			return fmt.Errorf("the stopped replica still holds the Lease")
		}
		leader, follower = l, old
		return nil
	})
	old.Restart(t)
	harness.WaitFor(t, 45*time.Second, func(context.Context) error {
		if !strings.Contains(leader.Log(), "signing switched to the new issuer") {
			return fmt.Errorf("the new leader has not switched")
		}
		return nil
	})
	waitBundles("second old root retired", func(r []*x509.Certificate) bool { return len(r) == 1 && !r[0].Equal(r2[0]) })
	time.Sleep(5 * time.Second)
	load.stop()
	load.check(t, "a leader failover mid-rotation")
	if !strings.Contains(leader.Log(), "old root removed from the bundle") {
		t.Error("the new leader did not retire the old root")
	}

	// The Secret holds the new state: a third replica starts on it with
	// the new root only.
	s3 := start("r3")
	if r3, err := roots(s3.BundleFile()); err != nil || len(r3) != 1 || r3[0].Equal(oldRoot) {
		t.Fatalf("a new replica's bundle: %d roots (%v)", len(r3), err)
	}
	if cur, _ := roots(leader.BundleFile()); !bytes.Equal(cur[0].Raw, identMustRoots(t, s3.BundleFile())[0].Raw) {
		t.Fatal("a new replica took another root than the leader's")
	}
}

func identMustRoots(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := certs.ParseCertsPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// identLoad calls url in a loop from two clients and counts failures.
type identLoad struct {
	ok, failed atomic.Int64
	firstErr   atomic.Value
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

func identStartLoad(url string) *identLoad {
	l := &identLoad{}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	for range 2 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			client := &http.Client{Timeout: 5 * time.Second}
			for ctx.Err() == nil {
				resp, err := client.Get(url)
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %s", resp.Status)
					}
				}
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					l.failed.Add(1)
					l.firstErr.CompareAndSwap(nil, err.Error())
				} else {
					l.ok.Add(1)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	return l
}

func (l *identLoad) stop() { l.cancel(); l.wg.Wait() }

func (l *identLoad) check(t *testing.T, during string) {
	t.Helper()
	if n := l.failed.Load(); n != 0 {
		t.Fatalf("%d of %d calls failed during %s; first: %v", n, n+l.ok.Load(), during, l.firstErr.Load())
	}
	if l.ok.Load() < 200 {
		t.Fatalf("only %d calls made during %s: the load did not run", l.ok.Load(), during)
	}
	t.Logf("%d calls, 0 failed, during %s", l.ok.Load(), during)
}
