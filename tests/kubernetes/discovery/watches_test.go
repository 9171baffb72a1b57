package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshd/meshd/discovery"
	kdisc "github.com/meshd/meshd/discovery/kubernetes"
	"github.com/meshd/meshd/tests/harness"
)

func buildCache(t *testing.T, ns, doc string) (*discovery.Cache, *errorLog, discovery.Resolver) {
	t.Helper()
	c := discovery.NewCache(discovery.Options{FirstResolveTimeout: 500 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { c.Close() })
	el := &errorLog{}
	c.Subscribe(func(ev discovery.Event) {
		if ev.Kind == discovery.EventError {
			el.add(ev.Err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := c.Build(ctx, kdisc.Name, discovery.BuildOptions{ConfigFile: resolverConfig(t, doc),
		Logger: slog.New(slog.DiscardHandler), Local: discovery.LocalInstance{Target: discovery.Target{AppID: "me", Namespace: ns}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return c, el, r
}

type errorLog struct {
	mu   sync.Mutex
	errs []string
}

func (l *errorLog) add(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, err.Error())
}

func (l *errorLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.errs, "\n")
}

// TestWatchBound: a sidecar holds one watch for its own namespace, one
// more per namespace it calls into, and no more than maxWatches: a call
// into a namespace past the bound is not resolved.
func TestWatchBound(t *testing.T) {
	k := harness.StartKube(t)
	cs := k.Client()
	for _, ns := range []string{"shop", "billing", "ops"} {
		ensureNamespace(t, cs, ns)
		applySlice(t, cs, sliceFor(ns, "app-1", "app", readyEP("10.6.0.1")))
	}
	base := watchers(t, k)
	c, _, r := buildCache(t, "shop", "kubeconfig: "+k.Kubeconfig+"\nmaxWatches: 2\n")
	waitWatchers(t, k, base+1)
	ctx := context.Background()
	if err := c.WaitTarget(ctx, discovery.Target{AppID: "app", Namespace: "billing"}); err != nil {
		t.Fatal(err)
	}
	waitWatchers(t, k, base+2)
	err := c.WaitTarget(ctx, discovery.Target{AppID: "app", Namespace: "ops"})
	if !errors.Is(err, discovery.ErrUnknownTarget) {
		t.Fatalf("a third namespace with maxWatches 2: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := watchers(t, k) - base; n != 2 {
		t.Fatalf("%d watches, want 2", n)
	}
	// Close ends them; the Cache keeps answering from its last state.
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	waitWatchers(t, k, base)
	if e, err := c.Pick(discovery.Target{AppID: "app", Namespace: "billing"}); err != nil || e.Address != "10.6.0.1:50002" {
		t.Fatalf("after Close: %v %v", e, err)
	}
}

func waitWatchers(t *testing.T, k *harness.Kube, want int) {
	t.Helper()
	harness.WaitFor(t, 5*time.Second, func(context.Context) error {
		if n := watchers(t, k); n != want {
			return fmt.Errorf("watches: %d, want %d", n, want)
		}
		return nil
	})
}

// TestLaterNamespaceRefused: a namespace first called after start whose
// RBAC is missing is reported (a discovery error event naming it), its
// apps stay unresolved, and once a Role grants list and watch there, it
// resolves without a restart.
func TestLaterNamespaceRefused(t *testing.T) {
	k := harness.StartKube(t)
	cs := k.Client()
	kc := serviceAccountKubeconfig(t, k, "shop", "caller", "list", "watch")
	ensureNamespace(t, cs, "billing")
	applySlice(t, cs, sliceFor("billing", "ledger-1", "ledger", readyEP("10.7.0.1")))
	c, errs, _ := buildCache(t, "shop", "kubeconfig: "+kc+"\n")
	ledger := discovery.Target{AppID: "ledger", Namespace: "billing"}
	if err := c.WaitTarget(context.Background(), ledger); !errors.Is(err, discovery.ErrUnknownTarget) {
		t.Fatalf("a namespace without RBAC: %v", err)
	}
	harness.WaitFor(t, 5*time.Second, func(context.Context) error {
		if !strings.Contains(errs.String(), `refuses to list/watch endpointslices in namespace "billing"`) {
			return errors.New("no error event naming the namespace: " + errs.String())
		}
		return nil
	})
	ctx := context.Background()
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "caller"}, Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}}}}
	if _, err := cs.RbacV1().Roles("billing").Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "caller"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "caller"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "caller", Namespace: "shop"}}}
	if _, err := cs.RbacV1().RoleBindings("billing").Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	waitSets(t, c, ledger, hostPorts("10.7.0.1"), hostPorts("10.7.0.1"), 30*time.Second)
	t.Logf("resolved %s after the Role was granted", time.Since(began).Round(time.Millisecond))
}
