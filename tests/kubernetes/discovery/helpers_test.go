// Package discovery_test proves the kubernetes discovery backend
// (--resolver kubernetes) against a real control plane: etcd,
// kube-apiserver and kube-controller-manager v1.37.2
// (tests/harness.StartKube), real meshd sidecars and sentry. No part of
// the API server is faked.
package discovery_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshd/meshd/discovery"
	kdisc "github.com/meshd/meshd/discovery/kubernetes"
	"github.com/meshd/meshd/tests/harness"
)

// internalPort is the sidecars' internal port: every pod of an app uses
// the same one, on its own pod IP, as in a cluster.
const internalPort = 50002

// ep is one endpoint of a test slice.
type ep struct {
	ip                          string
	ready, serving, terminating bool
}

func readyEP(ip string) ep { return ep{ip: ip, ready: true, serving: true} }

// sliceFor builds the EndpointSlice of app in ns as the EndpointSlice
// controller would for a headless Service labelled with the app ID.
func sliceFor(ns, name, app string, eps ...ep) *discoveryv1.EndpointSlice {
	port, portName, proto := int32(internalPort), kdisc.DefaultPortName, corev1.ProtocolTCP
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{
			kdisc.DefaultAppIDLabel: app, discoveryv1.LabelServiceName: app}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &proto}},
	}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{e.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: &e.ready, Serving: &e.serving, Terminating: &e.terminating}})
	}
	return s
}

func ensureNamespace(t testing.TB, cs kubernetes.Interface, ns string) {
	t.Helper()
	_, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// applySlice creates or replaces a slice.
func applySlice(t testing.TB, cs kubernetes.Interface, s *discoveryv1.EndpointSlice) {
	t.Helper()
	ctx := context.Background()
	api := cs.DiscoveryV1().EndpointSlices(s.Namespace)
	old, err := api.Get(ctx, s.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = api.Create(ctx, s, metav1.CreateOptions{})
	case err == nil:
		s.ResourceVersion = old.ResourceVersion
		_, err = api.Update(ctx, s, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// fastClient is an admin client without client-side throttling (client-go
// allows 5 requests a second by default), for the benchmarks' writes.
func fastClient(t testing.TB, k *harness.Kube) kubernetes.Interface {
	t.Helper()
	rc := k.RestConfig()
	rc.QPS, rc.Burst = 1000, 2000
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// resolverConfig writes a --resolver-config file.
func resolverConfig(t testing.TB, doc string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubernetes.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// observer is a Cache in the test process fed by the kubernetes backend,
// as a caller sidecar's is.
func observer(t testing.TB, k *harness.Kube, callerNS, extra string) (*discovery.Cache, discovery.Resolver) {
	t.Helper()
	c := discovery.NewCache(discovery.Options{Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := c.Build(ctx, kdisc.Name, discovery.BuildOptions{
		ConfigFile: resolverConfig(t, "kubeconfig: "+k.Kubeconfig+"\n"+extra),
		Logger:     slog.New(slog.DiscardHandler),
		Local:      discovery.LocalInstance{Target: discovery.Target{AppID: "observer", Namespace: callerNS}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return c, r
}

func addrs(eps []discovery.Endpoint) []string {
	out := make([]string, len(eps))
	for i, e := range eps {
		out[i] = e.Address
	}
	sort.Strings(out)
	return out
}

func hostPorts(ips ...string) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = fmt.Sprintf("%s:%d", ip, internalPort)
	}
	sort.Strings(out)
	return out
}

// waitSets waits until t's picker (Ready) and known set (Endpoints) are
// ready and known, and returns how long it took.
func waitSets(t testing.TB, c *discovery.Cache, tg discovery.Target, ready, known []string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var r, k []string
	for { // checked at least once, also with a tiny limit
		r, k = addrs(c.Ready(tg)), addrs(c.Endpoints(tg))
		if slices.Equal(r, ready) && slices.Equal(k, known) {
			return time.Since(start)
		}
		if time.Since(start) >= limit {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("%s: picker %v known %v after %s; want picker %v known %v", tg, r, k, limit, ready, known)
	return 0
}

// watchers is the number of EndpointSlice watches open at the API
// server, from its /metrics (apiserver_longrunning_requests).
func watchers(t testing.TB, k *harness.Kube) int {
	t.Helper()
	raw, err := k.Client().CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0.0
	found := false
	for line := range strings.Lines(string(raw)) {
		if !strings.HasPrefix(line, "apiserver_longrunning_requests{") ||
			!strings.Contains(line, `resource="endpointslices"`) || !strings.Contains(line, `verb="WATCH"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		n += v
		found = true
	}
	if !found {
		return 0
	}
	return int(n)
}
