package discovery_test

import (
	"context"
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshd/meshd/discovery"
	kdisc "github.com/meshd/meshd/discovery/kubernetes"
	"github.com/meshd/meshd/tests/harness"
)

// TestSlicesToPicker: EndpointSlices written to the real API server reach
// a caller's picker with their conditions mapped (ready in; serving &&
// terminating kept but not picked; not ready out), only the slices of the
// configured port name count, a bare namespace is watched on first use,
// and an app no slice names fails fast instead of waiting. No traffic:
// the addresses are plain data.
func TestSlicesToPicker(t *testing.T) {
	k := harness.StartKube(t)
	cs := k.Client()
	ensureNamespace(t, cs, "shop")
	ensureNamespace(t, cs, "billing")
	orders := discovery.Target{AppID: "orders", Namespace: "shop"}

	applySlice(t, cs, sliceFor("shop", "orders-a", "orders",
		readyEP("10.1.0.1"), readyEP("10.1.0.2"),
		ep{ip: "10.1.0.3"}, // not ready: out
		ep{ip: "10.1.0.4", serving: true, terminating: true})) // terminating, never picked before: out
	c, _ := observer(t, k, "shop", "")
	// The caller's own namespace is watched from the start: the first
	// state is there when Build returns.
	waitSets(t, c, orders, hostPorts("10.1.0.1", "10.1.0.2"), hostPorts("10.1.0.1", "10.1.0.2"), time.Millisecond)

	// A second slice of the same app adds to it; a slice without the
	// meshd-internal port is ignored.
	applySlice(t, cs, sliceFor("shop", "orders-b", "orders", readyEP("10.1.0.5")))
	other := sliceFor("shop", "orders-metrics", "orders", readyEP("10.1.0.9"))
	name := "metrics"
	other.Ports[0].Name = &name
	applySlice(t, cs, other)
	d := waitSets(t, c, orders, hostPorts("10.1.0.1", "10.1.0.2", "10.1.0.5"), hostPorts("10.1.0.1", "10.1.0.2", "10.1.0.5"), 5*time.Second)
	t.Logf("second slice in the picker after %s", d)

	// Ready -> serving && terminating: kept (in-flight calls), not picked.
	applySlice(t, cs, sliceFor("shop", "orders-a", "orders",
		readyEP("10.1.0.1"), ep{ip: "10.1.0.2", serving: true, terminating: true}))
	waitSets(t, c, orders, hostPorts("10.1.0.1", "10.1.0.5"), hostPorts("10.1.0.1", "10.1.0.2", "10.1.0.5"), 5*time.Second)
	// Terminating and no longer serving: out.
	applySlice(t, cs, sliceFor("shop", "orders-a", "orders",
		readyEP("10.1.0.1"), ep{ip: "10.1.0.2", terminating: true}))
	waitSets(t, c, orders, hostPorts("10.1.0.1", "10.1.0.5"), hostPorts("10.1.0.1", "10.1.0.5"), 5*time.Second)
	// Not ready: out; ready again: in.
	applySlice(t, cs, sliceFor("shop", "orders-b", "orders", ep{ip: "10.1.0.5", serving: true}))
	waitSets(t, c, orders, hostPorts("10.1.0.1"), hostPorts("10.1.0.1"), 5*time.Second)
	applySlice(t, cs, sliceFor("shop", "orders-b", "orders", readyEP("10.1.0.5")))
	waitSets(t, c, orders, hostPorts("10.1.0.1", "10.1.0.5"), hostPorts("10.1.0.1", "10.1.0.5"), 5*time.Second)

	// Another namespace: watched on first use; the first call waits for it
	// (WaitTarget, as the proxy does) and gets its endpoints.
	applySlice(t, cs, sliceFor("billing", "ledger-1", "ledger", readyEP("10.2.0.1")))
	ledger := discovery.Target{AppID: "ledger", Namespace: "billing"}
	if _, err := c.Pick(ledger); !errors.Is(err, discovery.ErrUnknownTarget) {
		t.Fatalf("first pick of an unwatched namespace: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.WaitTarget(ctx, ledger); err != nil {
		t.Fatal(err)
	}
	if e, err := c.Pick(ledger); err != nil || e.Address != "10.2.0.1:50002" {
		t.Fatalf("ledger.billing: %v %v", e, err)
	}
	// An app that no slice names in a watched namespace: known at once
	// with no endpoints (a fast "no healthy endpoint"), not a 2 s wait.
	ghost := discovery.Target{AppID: "ghost", Namespace: "shop"}
	began := time.Now()
	if err := c.WaitTarget(ctx, ghost); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Pick(ghost); !errors.Is(err, discovery.ErrNoHealthyEndpoint) {
		t.Fatalf("ghost: %v", err)
	}
	if d := time.Since(began); d > 500*time.Millisecond {
		t.Fatalf("an unknown app took %s to answer", d)
	}
	// ... and when its slice appears, it resolves.
	applySlice(t, cs, sliceFor("shop", "ghost-1", "ghost", readyEP("10.1.1.1")))
	waitSets(t, c, ghost, hostPorts("10.1.1.1"), hostPorts("10.1.1.1"), 5*time.Second)
	// Deleting an app's slices leaves it known with no endpoints.
	if err := cs.DiscoveryV1().EndpointSlices("shop").Delete(ctx, "ghost-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSets(t, c, ghost, []string{}, []string{}, 5*time.Second)

	// A slice relabelled to another app leaves the first one.
	moved := sliceFor("shop", "orders-b", "payments", readyEP("10.1.0.5"))
	applySlice(t, cs, moved)
	waitSets(t, c, orders, hostPorts("10.1.0.1"), hostPorts("10.1.0.1"), 5*time.Second)
	if err := c.WaitTarget(ctx, discovery.Target{AppID: "payments", Namespace: "shop"}); err != nil {
		t.Fatal(err)
	}
	waitSets(t, c, discovery.Target{AppID: "payments", Namespace: "shop"}, hostPorts("10.1.0.5"), hostPorts("10.1.0.5"), 5*time.Second)
}

// TestDaprVocabulary: with appIDLabel dapr.io/app-id and portName
// dapr-internal, Services labelled the Dapr way resolve.
func TestDaprVocabulary(t *testing.T) {
	k := harness.StartKube(t)
	cs := k.Client()
	s := sliceFor("default", "checkout-1", "checkout", readyEP("10.3.0.1"))
	delete(s.Labels, kdisc.DefaultAppIDLabel)
	s.Labels[kdisc.DaprAppIDLabel] = "checkout"
	pn := "dapr-internal"
	s.Ports[0].Name = &pn
	applySlice(t, cs, s)
	// A meshd-labelled slice is not seen with the Dapr label configured.
	applySlice(t, cs, sliceFor("default", "checkout-2", "checkout", readyEP("10.3.0.2")))
	c, _ := observer(t, k, "default", "appIDLabel: dapr.io/app-id\nportName: dapr-internal\n")
	tg := discovery.Target{AppID: "checkout", Namespace: "default"}
	waitSets(t, c, tg, hostPorts("10.3.0.1"), hostPorts("10.3.0.1"), time.Millisecond)
}

// TestClusterWide: one watch over every namespace; apps anywhere are known
// when Build returns.
func TestClusterWide(t *testing.T) {
	k := harness.StartKube(t)
	cs := k.Client()
	for _, ns := range []string{"a1", "a2"} {
		ensureNamespace(t, cs, ns)
		applySlice(t, cs, sliceFor(ns, "app-1", "app", readyEP("10.4.0.1")))
	}
	base := watchers(t, k) // the API server's own
	c, _ := observer(t, k, "a1", "clusterWide: true\n")
	for _, ns := range []string{"a1", "a2"} {
		waitSets(t, c, discovery.Target{AppID: "app", Namespace: ns}, hostPorts("10.4.0.1"), hostPorts("10.4.0.1"), time.Millisecond)
	}
	applySlice(t, cs, sliceFor("a2", "app-1", "app", readyEP("10.4.0.2")))
	waitSets(t, c, discovery.Target{AppID: "app", Namespace: "a2"}, hostPorts("10.4.0.2"), hostPorts("10.4.0.2"), 5*time.Second)
	if got := watchers(t, k) - base; got != 1 {
		t.Fatalf("cluster-wide: %d EndpointSlice watches at the API server, want 1", got)
	}
}
