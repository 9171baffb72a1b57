package kubernetes

import (
	"bytes"
	"log/slog"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshd/meshd/discovery"
)

type cond struct{ ready, serving, terminating *bool }

var (
	yes, no = ptr(true), ptr(false)
)

func ptr[T any](v T) *T { return &v }

func slice(addrType discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps map[string]cond) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "shop", Labels: map[string]string{DefaultAppIDLabel: "orders"}},
		AddressType: addrType, Ports: ports}
	keys := make([]string, 0, len(eps))
	for k := range eps {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, a := range keys {
		c := eps[a]
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a},
			Conditions: discoveryv1.EndpointConditions{Ready: c.ready, Serving: c.serving, Terminating: c.terminating}})
	}
	return s
}

func port(name string, p int32, proto corev1.Protocol) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: &name, Port: &p, Protocol: &proto}
}

func testResolver(t *testing.T) *resolver {
	cfg, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &resolver{cfg: cfg, log: slog.New(slog.DiscardHandler), state: map[discovery.Target]*appState{}}
}

func addrsOf(st *appState) []string {
	var out []string
	for _, e := range st.eps {
		out = append(out, e.Address)
	}
	return out
}

// TestCompute: the condition mapping and every kind of slice the backend
// must skip.
func TestCompute(t *testing.T) {
	r := testResolver(t)
	tg := discovery.Target{AppID: "orders", Namespace: "shop"}
	good := []discoveryv1.EndpointPort{port("metrics", 9090, corev1.ProtocolTCP), port(DefaultPortName, 50002, corev1.ProtocolTCP)}
	for _, c := range []struct {
		name string
		objs []any
		want []string
	}{
		{"conditions", []any{slice(discoveryv1.AddressTypeIPv4, good, map[string]cond{
			"10.0.0.1": {ready: yes},                                // ready
			"10.0.0.2": {},                                          // nil ready: ready (the API's contract)
			"10.0.0.3": {ready: no, serving: no},                    // not ready: out
			"10.0.0.4": {ready: no, serving: yes, terminating: yes}, // draining, unknown before: out
			"10.0.0.5": {ready: yes, terminating: yes},              // terminating wins over a stray ready
		})}, []string{"10.0.0.1:50002", "10.0.0.2:50002"}},
		{"IPv6", []any{slice(discoveryv1.AddressTypeIPv6, good, map[string]cond{"fd00::1": {ready: yes}})}, []string{"[fd00::1]:50002"}},
		{"FQDN slice skipped", []any{slice(discoveryv1.AddressTypeFQDN, good, map[string]cond{"a.example": {ready: yes}})}, nil},
		{"no port of that name", []any{slice(discoveryv1.AddressTypeIPv4, good[:1], map[string]cond{"10.0.0.1": {ready: yes}})}, nil},
		{"UDP port skipped", []any{slice(discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{port(DefaultPortName, 50002, corev1.ProtocolUDP)}, map[string]cond{"10.0.0.1": {ready: yes}})}, nil},
		{"port 0", []any{slice(discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{port(DefaultPortName, 0, corev1.ProtocolTCP)}, map[string]cond{"10.0.0.1": {ready: yes}})}, nil},
		{"port out of range", []any{slice(discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{port(DefaultPortName, 70000, corev1.ProtocolTCP)}, map[string]cond{"10.0.0.1": {ready: yes}})}, nil},
		{"nil port number", []any{slice(discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{{Name: ptr(DefaultPortName)}}, map[string]cond{"10.0.0.1": {ready: yes}})}, nil},
		{"bad address skipped", []any{slice(discoveryv1.AddressTypeIPv4, good, map[string]cond{"not-an-ip": {ready: yes}, "10.0.0.9": {ready: yes}})}, []string{"10.0.0.9:50002"}},
		{"the same endpoint in two slices: ready wins", []any{
			slice(discoveryv1.AddressTypeIPv4, good, map[string]cond{"10.0.0.1": {ready: no, serving: yes, terminating: yes}}),
			slice(discoveryv1.AddressTypeIPv4, good, map[string]cond{"10.0.0.1": {ready: yes}, "10.0.0.2": {ready: yes}}),
		}, []string{"10.0.0.1:50002", "10.0.0.2:50002"}},
		{"not a slice", []any{"junk"}, nil},
	} {
		st := r.compute(tg, c.objs)
		if got := addrsOf(st); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
		if len(st.draining) != 0 {
			t.Errorf("%s: draining %v with no previous state", c.name, st.draining)
		}
	}
	empty := r.compute(tg, nil)
	if !empty.placeholder || len(empty.eps) != 0 {
		t.Errorf("no slices: %+v", empty)
	}

	// A known endpoint that turns serving && terminating is kept, draining;
	// one no longer serving is out.
	r.state[tg] = r.compute(tg, []any{slice(discoveryv1.AddressTypeIPv4, good, map[string]cond{"10.0.0.1": {ready: yes}, "10.0.0.2": {ready: yes}})})
	st := r.compute(tg, []any{slice(discoveryv1.AddressTypeIPv4, good, map[string]cond{
		"10.0.0.1": {ready: no, serving: yes, terminating: yes},
		"10.0.0.2": {ready: no, serving: no, terminating: yes},
	})})
	if got := addrsOf(st); !slices.Equal(got, []string{"10.0.0.1:50002"}) || !st.draining["10.0.0.1:50002"] || len(st.draining) != 1 {
		t.Errorf("draining: %v %v", got, st.draining)
	}
}

// TestNoPortWarned: slices that name no port portName leave the app
// without endpoints, and the sidecar says why, once per app.
func TestNoPortWarned(t *testing.T) {
	r := testResolver(t)
	var buf bytes.Buffer
	r.log = slog.New(slog.NewTextHandler(&buf, nil))
	r.warned = map[string]bool{}
	tg := discovery.Target{AppID: "orders", Namespace: "shop"}
	objs := []any{slice(discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{port("http", 80, corev1.ProtocolTCP)}, map[string]cond{"10.0.0.1": {ready: yes}})}
	for range 3 {
		if st := r.compute(tg, objs); len(st.eps) != 0 {
			t.Fatalf("endpoints without the port: %v", st.eps)
		}
	}
	if n := strings.Count(buf.String(), "have no TCP port named meshd-internal"); n != 1 {
		t.Fatalf("warned %d times:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "target=orders.shop") {
		t.Fatalf("warning does not name the app: %s", buf.String())
	}
}

// TestTrim: the informer keeps only what compute reads.
func TestTrim(t *testing.T) {
	r := testResolver(t)
	s := slice(discoveryv1.AddressTypeIPv4, nil, map[string]cond{"10.0.0.1": {ready: yes}})
	s.Labels["other"] = "x"
	s.Annotations = map[string]string{"a": "b"}
	s.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "m"}}
	s.Endpoints[0].Addresses = append(s.Endpoints[0].Addresses, "10.0.0.2")
	s.Endpoints[0].NodeName, s.Endpoints[0].Hostname = ptr("n"), ptr("h")
	s.Endpoints[0].TargetRef = &corev1.ObjectReference{Name: "pod"}
	out, err := r.trim(s)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*discoveryv1.EndpointSlice)
	e := got.Endpoints[0]
	if len(got.Labels) != 1 || got.Annotations != nil || got.ManagedFields != nil || len(e.Addresses) != 1 ||
		e.NodeName != nil || e.Hostname != nil || e.TargetRef != nil || e.Conditions.Ready == nil {
		t.Fatalf("trimmed: %+v", got)
	}
	if x, _ := r.trim("other"); x != "other" {
		t.Fatal("trim changed a non-slice")
	}
}
