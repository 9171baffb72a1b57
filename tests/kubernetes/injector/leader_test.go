package injector_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshd/meshd/kube/appservices"
	kubecp "github.com/meshd/meshd/kube/controlplane"
	"github.com/meshd/meshd/kube/injector"
	"github.com/meshd/meshd/kube/policysource"
	"github.com/meshd/meshd/tests/harness"
)

// Leader election durations of the test (the chart keeps client-go's
// 15s/10s/2s).
const (
	leaseDuration = 4 * time.Second
	renewDeadline = 3 * time.Second
	retryPeriod   = 500 * time.Millisecond
)

// TestControlPlaneLeaderElection: two cmd/controlplane replicas against a
// real API server. Only the one holding the Lease writes: a broken policy
// ConfigMap gets one Event, not two, though both replicas judged it (each
// keeps its own policy directory for its xDS clients); the app Services
// are kept by the leader. The leader stopped (SIGTERM, as a rolling
// update does) releases the Lease and the other takes over within the
// lease duration; a leader killed (SIGKILL) is replaced once its Lease
// expires. Both takeovers are measured.
func TestControlPlaneLeaderElection(t *testing.T) {
	k := harness.StartKube(t)
	cs := k.Client()
	b := harness.Build(t)
	s := harness.StartSentry(t, b, "")
	ctx := context.Background()
	for _, ns := range []string{shop, system} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	static := filepath.Join(t.TempDir(), "static.yaml")
	if err := os.WriteFile(static, []byte("apps: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := func() *harness.ControlPlane {
		return harness.StartControlPlane(t, b, s, "--resolver", "static", "--resolver-config", static, "--kubeconfig", k.Kubeconfig,
			"--app-services", "--policy-source", "kubernetes", "--policy-dir", filepath.Join(t.TempDir(), "policy"),
			"--leader-elect-lease-duration", leaseDuration.String(), "--leader-elect-renew-deadline", renewDeadline.String(),
			"--leader-elect-retry-period", retryPeriod.String())
	}
	cps := []*harness.ControlPlane{start(), start()}

	// identity is a replica's identity in the Lease, from its start log.
	identity := func(cp *harness.ControlPlane) string {
		t.Helper()
		var id string
		harness.WaitFor(t, 10*time.Second, func(context.Context) error {
			for line := range strings.SplitSeq(cp.Log(), "\n") {
				if strings.Contains(line, "controlplane: leader election") {
					if _, v, ok := strings.Cut(line, "identity="); ok {
						id = strings.Fields(v)[0]
						return nil
					}
				}
			}
			return fmt.Errorf("no leader election line in the log:\n%s", cp.Log())
		})
		return id
	}
	holder := func(ctx context.Context) (string, error) {
		l, err := cs.CoordinationV1().Leases(system).Get(ctx, kubecp.LeaseName, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
			return "", fmt.Errorf("the Lease has no holder")
		}
		return *l.Spec.HolderIdentity, nil
	}
	// leader waits until one of cps holds the Lease and says it leads.
	leader := func(cps []*harness.ControlPlane, d time.Duration) (lead, follow *harness.ControlPlane) {
		t.Helper()
		ids := []string{identity(cps[0]), identity(cps[1])}
		harness.WaitFor(t, d, func(ctx context.Context) error {
			h, err := holder(ctx)
			if err != nil {
				return err
			}
			for i, id := range ids {
				if h == id && !cps[i].Exited() && strings.Contains(cps[i].Log(), "controlplane: leading") {
					lead, follow = cps[i], cps[1-i]
					return nil
				}
			}
			return fmt.Errorf("the Lease is held by %s; replicas %v", h, ids)
		})
		return lead, follow
	}
	lead, follow := leader(cps, 30*time.Second)
	if strings.Contains(follow.Log(), "controlplane: leading") {
		t.Fatalf("both replicas lead:\n%s", follow.Log())
	}

	// rejectedEvents counts the PolicyRejected Events on ConfigMap name.
	rejectedEvents := func(ctx context.Context, name string) (int, error) {
		evs, err := cs.CoreV1().Events(shop).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name + ",reason=" + policysource.ReasonRejected})
		if err != nil {
			return 0, err
		}
		return len(evs.Items), nil
	}
	// brokenEdit writes a ConfigMap that does not compile and waits until
	// both live replicas judged it; it then expects exactly one Event.
	n := 0
	brokenEdit := func(judges ...*harness.ControlPlane) {
		t.Helper()
		n++
		name := "broken-" + strconv.Itoa(n)
		before := make([]int, len(judges))
		for i, j := range judges {
			before[i] = strings.Count(j.Log(), "configmap="+name+" ")
		}
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: shop, Labels: map[string]string{policysource.Label: "true"}},
			Data: map[string]string{"authz.rego": "package mesh.authz\n\nallow if {\n"}}
		if _, err := cs.CoreV1().ConfigMaps(shop).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		harness.WaitFor(t, 20*time.Second, func(ctx context.Context) error {
			for i, j := range judges {
				if strings.Count(j.Log(), "configmap="+name+" ") == before[i] {
					return fmt.Errorf("a replica has not judged %s yet", name)
				}
			}
			if c, err := rejectedEvents(ctx, name); err != nil || c == 0 {
				return fmt.Errorf("no Event on %s yet (%v)", name, err)
			}
			return nil
		})
		// Both judged it (and the leader's Event is in): any second Event
		// would have been written by now; give a slow one a moment more.
		time.Sleep(time.Second)
		if c, err := rejectedEvents(ctx, name); err != nil || c != 1 {
			t.Errorf("%s: %d PolicyRejected Events (%v), want exactly 1 from the leader", name, c, err)
		}
	}
	brokenEdit(lead, follow)

	// The app Services: kept by the leader.
	// (No webhook here: the pod carries the label the injector would set.)
	p := pod(shop, "orders-1", nil)
	p.Labels = map[string]string{injector.LabelAppID: "orders"}
	if _, err := cs.CoreV1().Pods(shop).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, 20*time.Second, func(ctx context.Context) error {
		_, err := cs.CoreV1().Services(shop).Get(ctx, appservices.ServiceName("orders"), metav1.GetOptions{})
		return err
	})

	// A graceful stop: the Lease is released, the other takes over.
	t0 := time.Now()
	if err := lead.Stop(10 * time.Second); err != nil {
		t.Logf("stopping the leader: %v", err)
	}
	stopped := time.Since(t0)
	var next *harness.ControlPlane
	harness.WaitFor(t, leaseDuration+2*retryPeriod, func(ctx context.Context) error {
		if strings.Contains(follow.Log(), "controlplane: leading") {
			next = follow
			return nil
		}
		return fmt.Errorf("the follower does not lead yet")
	})
	took := time.Since(t0)
	t.Logf("leader stopped (SIGTERM, exited after %s) -> the other leads after %s (lease duration %s)", stopped.Round(time.Millisecond), took.Round(time.Millisecond), leaseDuration)
	if took > leaseDuration {
		t.Errorf("takeover after a graceful stop took %s, want within the lease duration %s", took, leaseDuration)
	}
	brokenEdit(next)
	// The new leader keeps the app Services: a deleted one is set back.
	if err := cs.CoreV1().Services(shop).Delete(ctx, appservices.ServiceName("orders"), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, 20*time.Second, func(ctx context.Context) error {
		_, err := cs.CoreV1().Services(shop).Get(ctx, appservices.ServiceName("orders"), metav1.GetOptions{})
		return err
	})

	// A crash: a second replica again, then the leader killed. Its Lease
	// must expire first.
	again := start()
	_ = identity(again)
	harness.WaitFor(t, 10*time.Second, func(context.Context) error {
		if !strings.Contains(again.Log(), "controlplane: following") {
			return fmt.Errorf("the new replica does not follow yet")
		}
		return nil
	})
	t0 = time.Now()
	next.Kill()
	harness.WaitFor(t, leaseDuration+4*retryPeriod+2*time.Second, func(ctx context.Context) error {
		if !strings.Contains(again.Log(), "controlplane: leading") {
			return fmt.Errorf("the replica does not lead yet")
		}
		return nil
	})
	t.Logf("leader killed (SIGKILL) -> the other leads after %s (lease duration %s, retry period %s)", time.Since(t0).Round(time.Millisecond), leaseDuration, retryPeriod)
	brokenEdit(again)
}
