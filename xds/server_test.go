package xds_test

import (
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/discovery"
	_ "github.com/meshd/meshd/discovery/static"
	"github.com/meshd/meshd/discovery/xds/policypb"
	"github.com/meshd/meshd/sentry/ca"
	"github.com/meshd/meshd/xds"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

// testCA is sentry's real CA, in process.
func testCA(t *testing.T) *ca.Authority {
	t.Helper()
	a, err := ca.Open(ca.Options{DataDir: t.TempDir(), TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

type staticSVID struct{ s *x509svid.SVID }

func (s staticSVID) GetX509SVID() (*x509svid.SVID, error) { return s.s, nil }

func svid(t *testing.T, a *ca.Authority, ns, app string) staticSVID {
	t.Helper()
	id, err := certs.NewIdentity(td.String(), ns, app)
	if err != nil {
		t.Fatal(err)
	}
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	signed, err := a.Sign(id, &key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(signed.DER)
	if err != nil {
		t.Fatal(err)
	}
	return staticSVID{&x509svid.SVID{ID: id.ID(), Certificates: append([]*x509.Certificate{leaf}, signed.Chain...), PrivateKey: key}}
}

func writeStatic(t *testing.T, path, body string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// running is a Server serving on loopback, stopped at the end of the test.
type running struct {
	srv  *xds.Server
	addr string
	ca   *ca.Authority
	file string
}

func start(t *testing.T, apps string, cfg xds.Config) *running {
	t.Helper()
	a := testCA(t)
	file := filepath.Join(t.TempDir(), "apps.yaml")
	writeStatic(t, file, apps)
	cp := svid(t, a, "meshd-system", "controlplane")
	cfg.Resolver, cfg.ResolverConfig = "static", file
	cfg.SVIDSource, cfg.BundleSource, cfg.TrustDomain = cp, a, td
	if cfg.Debounce == 0 {
		cfg.Debounce = 20 * time.Millisecond
	}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := xds.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &running{srv: srv, addr: l.Addr().String(), ca: a, file: file}
}

func (r *running) dial(t *testing.T, ns, app string) *grpc.ClientConn {
	t.Helper()
	s := svid(t, r.ca, ns, app)
	cfg := tlsconfig.MTLSClientConfig(s, r.ca, tlsconfig.AuthorizeID(spiffeid.RequireFromPath(td, "/ns/meshd-system/controlplane")))
	conn, err := grpc.NewClient("passthrough:///"+r.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

type deltaClient struct {
	st   discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	resp chan *discoveryv3.DeltaDiscoveryResponse
}

func openDelta(t *testing.T, conn *grpc.ClientConn, typeURLs ...string) *deltaClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tu := range typeURLs {
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "test"}, TypeUrl: tu, ResourceNamesSubscribe: []string{"*"}}); err != nil {
			t.Fatal(err)
		}
	}
	c := &deltaClient{st: st, resp: make(chan *discoveryv3.DeltaDiscoveryResponse, 16)}
	go func() { // the one reader of the stream
		defer close(c.resp)
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			c.resp <- r
		}
	}()
	return c
}

// next receives one response (within d) and ACKs it.
func (c *deltaClient) next(t *testing.T, d time.Duration) *discoveryv3.DeltaDiscoveryResponse {
	t.Helper()
	select {
	case r, ok := <-c.resp:
		if !ok {
			t.Fatal("stream ended")
		}
		if err := c.st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}); err != nil {
			t.Fatal(err)
		}
		return r
	case <-time.After(d):
	}
	return nil
}

func names(r *discoveryv3.DeltaDiscoveryResponse) []string {
	var out []string
	for _, x := range r.GetResources() {
		out = append(out, x.GetName())
	}
	sort.Strings(out)
	return out
}

const threeApps = `apps:
  - appId: orders
    addresses: ["127.0.0.1:1001", "127.0.0.1:1002"]
  - appId: cart
    addresses: ["127.0.0.1:1003"]
  - appId: pay
    namespace: other
    addresses: ["127.0.0.1:1004"]
`

// TestOneChangeOneCLA: after the initial state, one endpoint change sends
// exactly one ClusterLoadAssignment, once (debounced), to a delta client
// watching it, and nothing to a client of a namespace that does not see it.
func TestOneChangeOneCLA(t *testing.T) {
	r := start(t, threeApps, xds.Config{})
	cla := xds.TypeURLs[1]
	c := openDelta(t, r.dial(t, "default", "frontend"), cla)
	other := openDelta(t, r.dial(t, "other", "x"), cla)
	if got := names(c.next(t, 5*time.Second)); strings.Join(got, ",") != "cart.default,orders.default" {
		t.Fatalf("initial CLAs of default: %v", got)
	}
	if got := names(other.next(t, 5*time.Second)); strings.Join(got, ",") != "pay.other" {
		t.Fatalf("initial CLAs of other: %v", got)
	}
	writeStatic(t, r.file, strings.Replace(threeApps, "1002", "1007", 1))
	resp := c.next(t, 5*time.Second)
	if got := names(resp); strings.Join(got, ",") != "orders.default" || len(resp.GetRemovedResources()) != 0 {
		t.Fatalf("after one app changed: %v removed %v; want only orders.default", got, resp.GetRemovedResources())
	}
	if extra := c.next(t, 500*time.Millisecond); extra != nil {
		t.Errorf("a second response after one change: %v", names(extra))
	}
	if extra := other.next(t, 300*time.Millisecond); extra != nil {
		t.Errorf("the other namespace got %v for a change it cannot see", names(extra))
	}
	// An app removed: one removal.
	writeStatic(t, r.file, strings.Replace(strings.Replace(threeApps, "1002", "1007", 1), "  - appId: cart\n    addresses: [\"127.0.0.1:1003\"]\n", "", 1))
	resp = c.next(t, 5*time.Second)
	if len(resp.GetResources()) != 0 || strings.Join(resp.GetRemovedResources(), ",") != "cart.default" {
		t.Errorf("after cart left: resources %v removed %v", names(resp), resp.GetRemovedResources())
	}
}

// TestHookReplacesCluster: an AppHook's Cluster replaces the plain one and
// its Listeners are served; a hook whose resource fails ValidateAll keeps
// the app's last good resources.
func TestHookReplacesCluster(t *testing.T) {
	bad := false
	hook := func(app discovery.Target, eps []xds.Endpoint) (xds.AppResources, error) {
		c := xds.Cluster(app)
		c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		if bad {
			c.ConnectTimeout.Seconds = -1 // fails ValidateAll (gt 0)
		}
		return xds.AppResources{Cluster: c}, nil
	}
	r := start(t, threeApps, xds.Config{Hook: hook})
	c := openDelta(t, r.dial(t, "default", "frontend"), xds.TypeURLs[0])
	resp := c.next(t, 5*time.Second)
	if len(resp.GetResources()) != 2 {
		t.Fatalf("clusters: %v", names(resp))
	}
	var cl clusterv3.Cluster
	if err := resp.GetResources()[0].GetResource().UnmarshalTo(&cl); err != nil {
		t.Fatal(err)
	}
	if cl.GetLbPolicy() != clusterv3.Cluster_LEAST_REQUEST {
		t.Errorf("the hook's Cluster was not served: %v", cl.GetLbPolicy())
	}
	// The hook now builds an invalid Cluster: refused, the last good one
	// stays (no push).
	bad = true
	writeStatic(t, r.file, strings.Replace(threeApps, "1002", "1009", 1))
	if extra := c.next(t, 500*time.Millisecond); extra != nil {
		t.Errorf("an invalid Cluster was pushed: %v", names(extra))
	}
	if r.srv.Stats().Invalid == 0 {
		t.Errorf("Stats().Invalid = 0 after a refused resource")
	}
}

// TestBuildRefusesInvalid: the resources of an app that fail validation
// never enter a snapshot.
func TestBuildRefusesInvalid(t *testing.T) {
	app := discovery.Target{AppID: "orders", Namespace: "default"}
	for _, c := range []struct {
		name string
		hook xds.AppHook
		want string
	}{
		{"renamed cluster", func(discovery.Target, []xds.Endpoint) (xds.AppResources, error) {
			return xds.AppResources{Cluster: xds.Cluster(discovery.Target{AppID: "x", Namespace: "default"})}, nil
		}, "keep the app's resource name"},
		{"invalid cluster", func(t discovery.Target, _ []xds.Endpoint) (xds.AppResources, error) {
			c := xds.Cluster(t)
			c.ConnectTimeout.Seconds = -1
			return xds.AppResources{Cluster: c}, nil
		}, "ConnectTimeout"},
		{"a resource without ValidateAll", func(discovery.Target, []xds.Endpoint) (xds.AppResources, error) {
			return xds.AppResources{Listeners: []types.Resource{wrapperspb.String("x")}}, nil
		}, "no ValidateAll"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := xds.BuildApp(app, []xds.Endpoint{{Address: "127.0.0.1:1", Healthy: true}}, c.hook)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v; want %q", err, c.want)
			}
		})
	}
	for _, addr := range []string{"nohost", "127.0.0.1:0", "127.0.0.1:99999", ":80"} {
		if _, err := xds.LoadAssignment(app, []xds.Endpoint{{Address: addr}}); err == nil {
			if _, err := xds.BuildApp(app, []xds.Endpoint{{Address: addr}}, nil); err == nil {
				t.Errorf("endpoint %q accepted", addr)
			}
		}
	}
}

// TestPolicySets: a client gets its namespace's PolicySet and _mesh; a
// policy directory that does not load is refused at start.
func TestPolicySets(t *testing.T) {
	dir := t.TempDir()
	for p, body := range map[string]string{
		"default/a.rego": "package mesh.authz\n\nallow if true\n",
		"other/a.rego":   "package mesh.authz\n\nallow if false\n",
		"_mesh/m.rego":   "package mesh.authz\n\ndeny contains \"x\" if input.request.path == \"/x\"\n",
	} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := start(t, threeApps, xds.Config{PolicyDir: dir})
	c := openDelta(t, r.dial(t, "default", "frontend"), policypb.TypeURL)
	resp := c.next(t, 5*time.Second)
	if got := strings.Join(names(resp), ","); got != "_mesh,default" {
		t.Errorf("policy sets of default: %s", got)
	}
	var ps policypb.PolicySet
	for _, res := range resp.GetResources() {
		if res.GetName() == "default" {
			if err := res.GetResource().UnmarshalTo(&ps); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(ps.GetFiles()) != 1 || ps.GetFiles()[0].GetPath() != "a.rego" {
		t.Errorf("default's files: %v", ps.GetFiles())
	}

	if err := os.WriteFile(filepath.Join(dir, "default", "b.rego"), []byte("package mesh.authz\nallow if {\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := testCA(t)
	cp := svid(t, a, "meshd-system", "controlplane")
	_, err := xds.New(context.Background(), xds.Config{Resolver: "static", ResolverConfig: r.file, PolicyDir: dir,
		SVIDSource: cp, BundleSource: a, TrustDomain: td})
	if err == nil || !strings.Contains(err.Error(), "default/b.rego:") {
		t.Errorf("broken policy dir at start: %v", err)
	}
}

// TestNewErrors: bad configurations fail New with a clear error and leave
// nothing running.
func TestNewErrors(t *testing.T) {
	a := testCA(t)
	cp := svid(t, a, "meshd-system", "controlplane")
	file := filepath.Join(t.TempDir(), "apps.yaml")
	writeStatic(t, file, threeApps)
	base := xds.Config{Resolver: "static", ResolverConfig: file, SVIDSource: cp, BundleSource: a, TrustDomain: td}
	for _, c := range []struct {
		name string
		mod  func(*xds.Config)
		want string
	}{
		{"no identity", func(c *xds.Config) { c.SVIDSource = nil }, "identity"},
		{"unknown resolver", func(c *xds.Config) { c.Resolver = "nosuch" }, "unknown resolver"},
		{"bad resolver file", func(c *xds.Config) { c.ResolverConfig = "/nonexistent" }, "nonexistent"},
		{"bad export", func(c *xds.Config) { c.Exports = map[string][]string{"a.b": {"c"}} }, "export"},
		{"missing policy dir", func(c *xds.Config) { c.PolicyDir = "/nonexistent" }, "--policy-dir"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := base
			c.mod(&cfg)
			if _, err := xds.New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v; want %q", err, c.want)
			}
		})
	}
}

// TestHookListenersAndRoutes: the Listeners and RouteConfigurations an
// AppHook returns are served under their types, to the app's namespace,
// next to the app's Cluster and CLA (the proxyless gRPC contract).
func TestHookListenersAndRoutes(t *testing.T) {
	hook := func(app discovery.Target, _ []xds.Endpoint) (xds.AppResources, error) {
		name := xds.ResourceName(app)
		return xds.AppResources{
			Listeners: []types.Resource{&listenerv3.Listener{Name: name}},
			Routes:    []types.Resource{&routev3.RouteConfiguration{Name: name}},
		}, nil
	}
	r := start(t, threeApps, xds.Config{Hook: hook})
	conn := r.dial(t, "default", "frontend")
	for _, tu := range []string{xds.TypeURLs[2], xds.TypeURLs[3]} {
		c := openDelta(t, conn, tu)
		if got := strings.Join(names(c.next(t, 5*time.Second)), ","); got != "cart.default,orders.default" {
			t.Errorf("%s: %s", tu, got)
		}
	}
}
