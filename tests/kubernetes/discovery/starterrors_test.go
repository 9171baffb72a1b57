package discovery_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshd/meshd/discovery"
	kdisc "github.com/meshd/meshd/discovery/kubernetes"
	"github.com/meshd/meshd/tests/harness"
)

// serviceAccountKubeconfig makes a ServiceAccount in ns, allowed verbs on
// endpointslices there (none: no Role at all), and writes a kubeconfig
// with a token the real TokenRequest API minted for it.
func serviceAccountKubeconfig(t *testing.T, k *harness.Kube, ns, name string, verbs ...string) string {
	t.Helper()
	cs := k.Client()
	ctx := context.Background()
	ensureNamespace(t, cs, ns)
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(verbs) > 0 {
		role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: verbs}}}
		if _, err := cs.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}}}
		if _, err := cs.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	exp := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name+".kubeconfig")
	k.WriteKubeconfig(path, tr.Status.Token)
	return path
}

func build(t *testing.T, ns, doc string) error {
	t.Helper()
	c := discovery.NewCache(discovery.Options{})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := c.Build(ctx, kdisc.Name, discovery.BuildOptions{ConfigFile: resolverConfig(t, doc),
		Logger: slog.New(slog.DiscardHandler), Local: discovery.LocalInstance{Target: discovery.Target{AppID: "me", Namespace: ns}}})
	if err == nil {
		r.Close()
	}
	return err
}

// TestStartErrors: each way the API server can be out of reach at start
// is an error that says what is wrong: the resolver does not start.
func TestStartErrors(t *testing.T) {
	k := harness.StartKube(t)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.kubeconfig")
	if err := os.WriteFile(garbage, []byte("apiVersion: v1\nclusters: 7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badToken := filepath.Join(dir, "bad-token.kubeconfig")
	k.WriteKubeconfig(badToken, "not-a-valid-token")
	noRBAC := serviceAccountKubeconfig(t, k, "shop", "no-rbac")
	listOnly := serviceAccountKubeconfig(t, k, "shop", "list-only", "list")
	full := serviceAccountKubeconfig(t, k, "shop", "full", "list", "watch")

	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	for _, c := range []struct {
		name, ns, doc string
		want          []string
	}{
		{"no kubeconfig, not in a pod", "shop", "", []string{"kubernetes: no kubeconfig in --resolver-config and not running in a pod"}},
		{"missing kubeconfig", "shop", "kubeconfig: " + filepath.Join(dir, "missing") + "\n",
			[]string{"kubernetes: kubeconfig: open " + filepath.Join(dir, "missing") + ": no such file or directory"}},
		{"kubeconfig is a directory", "shop", "kubeconfig: " + dir + "\n", []string{"kubernetes: kubeconfig " + dir}},
		{"garbage kubeconfig", "shop", "kubeconfig: " + garbage + "\n", []string{"kubernetes: kubeconfig " + garbage}},
		{"unknown context", "shop", "kubeconfig: " + k.Kubeconfig + "\ncontext: nope\n", []string{"kubernetes: kubeconfig", `context "nope"`}},
		{"bad token (401)", "shop", "kubeconfig: " + badToken + "\n", []string{"refuses our credentials (401 Unauthorized)"}},
		{"no RBAC (403)", "shop", "kubeconfig: " + noRBAC + "\n",
			[]string{`refuses us as "system:serviceaccount:shop:no-rbac"`, "RBAC: missing verbs list and watch on endpointslices (API group discovery.k8s.io) in namespace \"shop\""}},
		{"list but no watch", "shop", "kubeconfig: " + listOnly + "\n",
			[]string{"RBAC: missing verb watch on endpointslices (API group discovery.k8s.io) in namespace \"shop\""}},
		{"RBAC in shop, not in a listed namespace", "shop", "kubeconfig: " + full + "\nnamespaces: [billing]\n",
			[]string{"RBAC: missing verbs list and watch", `in namespace "billing"`}},
		{"namespace-scoped RBAC, clusterWide", "shop", "kubeconfig: " + full + "\nclusterWide: true\n",
			[]string{"RBAC: missing verbs list and watch", "cluster-wide"}},
	} {
		err := build(t, c.ns, c.doc)
		if err == nil {
			t.Errorf("%s: Build succeeded", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q\n\twant it to contain %q", c.name, err, w)
			}
		}
		t.Logf("%s: %v", c.name, err)
	}
	// The ServiceAccount with list and watch in its namespace starts.
	if err := build(t, "shop", "kubeconfig: "+full+"\n"); err != nil {
		t.Fatalf("list+watch in shop: %v", err)
	}

	// The API server down at start.
	k.StopAPIServer()
	began := time.Now()
	err := build(t, "shop", "kubeconfig: "+k.Kubeconfig+"\nstartTimeout: 2s\n")
	if err == nil || !strings.Contains(err.Error(), "kubernetes: the API server https://127.0.0.1:"+strconv.Itoa(k.Port)+" does not answer") {
		t.Fatalf("API server down: %v", err)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Fatalf("API server down: the error took %s (startTimeout 2s)", d)
	}
	t.Logf("API server down: %v", err)
}

// TestSidecarRefusedByRBAC: what a user sees: meshd with a service account
// that may not watch endpointslices exits at start with the message.
func TestSidecarRefusedByRBAC(t *testing.T) {
	k := harness.StartKube(t)
	b := harness.Build(t)
	listOnly := serviceAccountKubeconfig(t, k, "shop", "list-only", "list")
	p := harness.NewSidecarPorts(t)
	sc := harness.Start(t, "meshd", b.Meshd, "--app-id", "frontend", "--namespace", "shop", "--insecure",
		"--http-port", strconv.Itoa(p.HTTP), "--grpc-port", strconv.Itoa(p.GRPC),
		"--internal-port", strconv.Itoa(p.Internal), "--metrics-port", strconv.Itoa(p.Metrics), "--listen-address", "127.0.0.1",
		"--resolver", "kubernetes", "--resolver-config", resolverConfig(t, "kubeconfig: "+listOnly+"\n"))
	if err := sc.Wait(30 * time.Second); err == nil {
		t.Fatalf("meshd exited 0\n%s", sc.Log())
	}
	if sc.ExitCode() == 0 || !strings.Contains(sc.Log(), "RBAC: missing verb watch on endpointslices (API group discovery.k8s.io) in namespace") {
		t.Fatalf("meshd exit %d, log:\n%s", sc.ExitCode(), sc.Log())
	}
}
