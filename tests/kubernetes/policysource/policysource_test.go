// Package policysource_test proves namespace policies as ConfigMaps
// (package kube/policysource) against a real kube-apiserver v1.37.2 and
// real sidecars: an edit in a namespace's ConfigMap changes the decisions
// of real calls within seconds, a user with edit rights in one namespace
// cannot touch another's policy (the API server's RBAC), and a broken
// ConfigMap is reported on itself while the last good policy stays.
package policysource_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshd/meshd/kube/policysource"
	"github.com/meshd/meshd/tests/harness"
)

const (
	meshNS = "meshd-system"
	shop   = "shop"
	bank   = "bank"
)

const allowFrontend = `package mesh.authz

allow if input.source.app_id == "frontend"
`

const denyFrontend = `package mesh.authz

deny contains "frontend may not call orders any more" if input.source.app_id == "frontend"
`

const meshAdmin = `package mesh.authz

deny contains "admin routes are closed mesh-wide" if startswith(input.request.path, "/admin")
`

func policyCM(ns, name, key, rego string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{policysource.Label: "true"}},
		Data: map[string]string{key: rego}}
}

func TestPolicyConfigMapsWithRealAPIServer(t *testing.T) {
	k := harness.StartKube(t)
	// The built-in edit role gets its rules by aggregation.
	k.StartControllerManager("clusterrole-aggregation")
	cs := k.Client()
	ctx := context.Background()
	for _, ns := range []string{meshNS, shop, bank} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cs.CoreV1().ConfigMaps(meshNS).Create(ctx, policyCM(meshNS, "mesh-rules", "base.rego", meshAdmin), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "policy")
	c, err := policysource.New(cs, policysource.Options{MeshNamespace: meshNS, Dir: dir, Debounce: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("policysource.Run: %v", err)
		}
	})
	harness.WaitFor(t, 10*time.Second, func(context.Context) error {
		if _, err := os.Stat(filepath.Join(dir, "_mesh", "mesh-rules.base.rego")); err != nil {
			return err
		}
		return nil
	})

	// Real sidecars: orders in shop follows the directory (deny without a
	// policy), frontend calls it.
	bins := harness.Build(t)
	sentry := harness.StartSentry(t, bins, "")
	ordersPorts := harness.NewSidecarPorts(t)
	resolver := filepath.Join(t.TempDir(), "resolver.yaml")
	harness.WriteStatic(t, resolver, harness.StaticApp{AppID: "orders", Namespace: shop, Addresses: []string{ordersPorts.InternalAddr()}})
	app := harness.StartEcho(t, bins, "orders-1", 0)
	harness.StartSidecar(t, bins, sentry, harness.SidecarConfig{AppID: "orders", Namespace: shop, AppPort: app.Port, Ports: ordersPorts,
		ResolverFile: resolver, Extra: []string{"--policy-dir", dir, "--policy-default", "deny"}})
	frontend := harness.StartSidecar(t, bins, sentry, harness.SidecarConfig{AppID: "frontend", Namespace: shop, ResolverFile: resolver})
	call := func(path string) (int, string) {
		resp, err := http.Get(frontend.HTTPURL() + "/v1.0/invoke/orders." + shop + "/method" + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitCall := func(what, path string, want int, body string) time.Duration {
		t.Helper()
		start := time.Now()
		harness.WaitFor(t, 10*time.Second, func(context.Context) error {
			if code, b := call(path); code != want || !strings.Contains(b, body) {
				return fmt.Errorf("%s: GET %s = %d %s, want %d with %q", what, path, code, b, want, body)
			}
			return nil
		})
		return time.Since(start)
	}
	if code, _ := call("/orders"); code != http.StatusForbidden {
		t.Fatalf("before any shop policy: %d, want 403", code)
	}

	// The owners of shop allow frontend: calls pass within seconds.
	cms := cs.CoreV1().ConfigMaps(shop)
	cm, err := cms.Create(ctx, policyCM(shop, "orders-policy", "orders.rego", allowFrontend), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	took := waitCall("allowed", "/orders", 200, "")
	t.Logf("ConfigMap created -> first allowed call: %s", took.Round(time.Millisecond))
	waitCall("mesh-wide rule", "/admin/x", 403, "admin routes are closed mesh-wide")

	// A broken edit: reported on the ConfigMap with key:line, and the last
	// good policy stays in force.
	cm.Data["orders.rego"] = "package mesh.authz\n\nallow if {\n  input.source.app_id ==\n"
	if cm, err = cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	ev := waitEvent(t, cs, shop, cm, policysource.ReasonRejected)
	if ev.Type != corev1.EventTypeWarning || !strings.Contains(ev.Message, "orders.rego:") {
		t.Errorf("event %s %q: want a Warning naming orders.rego:LINE", ev.Type, ev.Message)
	}
	t.Logf("rejection event: %s", ev.Message)
	time.Sleep(500 * time.Millisecond)
	if code, b := call("/orders"); code != 200 {
		t.Errorf("after a broken edit: %d %s, want the last good policy (200)", code, b)
	}

	// Fixed to deny: decisions follow.
	cm.Data["orders.rego"] = denyFrontend
	if cm, err = cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	took = waitCall("denied", "/orders", 403, "frontend may not call orders any more")
	t.Logf("ConfigMap edited -> first denied call: %s", took.Round(time.Millisecond))
	if ev := waitEvent(t, cs, shop, cm, policysource.ReasonAccepted); ev.Type != corev1.EventTypeNormal {
		t.Errorf("accepted event type %s", ev.Type)
	}

	// Deleted: no shop policy, the default (deny) again.
	if err := cms.Delete(ctx, cm.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitCall("deleted", "/orders", 403, "")

	// RBAC: a user who may edit in bank only (the built-in edit role bound
	// in bank) changes bank's policy but not shop's or the mesh's.
	if _, err := cs.RbacV1().RoleBindings(bank).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "alice-edit", Namespace: bank},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "edit"},
		Subjects:   []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "alice"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	alice := asUser(t, k.RestConfig(), "alice")
	harness.WaitFor(t, 10*time.Second, func(ctx context.Context) error {
		_, err := alice.CoreV1().ConfigMaps(bank).Create(ctx, policyCM(bank, "bank-policy", "p.rego", allowFrontend), metav1.CreateOptions{})
		return err
	})
	for _, ns := range []string{shop, meshNS} {
		_, err := alice.CoreV1().ConfigMaps(ns).Create(ctx, policyCM(ns, "alice-was-here", "p.rego", allowFrontend), metav1.CreateOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("alice creating a policy ConfigMap in %s: %v, want Forbidden", ns, err)
		}
		_, err = alice.CoreV1().ConfigMaps(ns).Update(ctx, policyCM(ns, "mesh-rules", "base.rego", ""), metav1.UpdateOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("alice updating a ConfigMap in %s: %v, want Forbidden", ns, err)
		}
	}
	if code, _ := call("/orders"); code != http.StatusForbidden {
		t.Errorf("after alice's attempts: %d, want shop's calls still denied", code)
	}
}

func asUser(t *testing.T, cfg *rest.Config, user string) kubernetes.Interface {
	t.Helper()
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:authenticated"}}
	cs, err := kubernetes.NewForConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// waitEvent waits for an Event with reason about cm at its current
// resourceVersion.
func waitEvent(t *testing.T, cs kubernetes.Interface, ns string, cm *corev1.ConfigMap, reason string) corev1.Event {
	t.Helper()
	var got corev1.Event
	harness.WaitFor(t, 10*time.Second, func(ctx context.Context) error {
		l, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + cm.Name})
		if err != nil {
			return err
		}
		for _, e := range l.Items {
			if e.Reason == reason && e.InvolvedObject.ResourceVersion == cm.ResourceVersion {
				got = e
				return nil
			}
		}
		return errors.New("no " + reason + " event for " + cm.Name + " at " + cm.ResourceVersion)
	})
	return got
}
