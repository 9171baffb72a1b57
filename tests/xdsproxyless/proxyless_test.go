// Package xdsproxyless_test proves proxyless gRPC (issue #14): a real grpc-go
// client (examples/apps/xdsclient, grpc-go's own xds resolver and xDS
// credentials, no sidecar), with the SVID files `meshctl svid` keeps and the
// bootstrap it writes, dials xds:///echo.default and reaches three meshd
// sidecars, each in front of a grpcecho app, over mTLS. The xDS resources
// are xds/grpcxds's, served by go-control-plane's own server and snapshot
// cache in this test process, over mTLS with a sentry-issued SVID.
package xdsproxyless_test

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/certs/svidfiles"
	"github.com/meshd/meshd/tests/harness"
	"github.com/meshd/meshd/xds/grpcxds"
)

const (
	app = "echo"
	ns  = "default"
	td  = "cluster.local"
)

var (
	toolsOnce                          sync.Once
	meshctlBin, xdsclient, xdsclientID string
	toolsErr                           error
)

// tools builds meshctl and the proxyless client once, the client twice:
// plain grpc-go, and with -tags meshdcreds (xds/grpccreds imported).
func tools(t *testing.T) (meshctl, client, clientID string) {
	t.Helper()
	toolsOnce.Do(func() {
		dir, err := harness.BinDir()
		if err != nil {
			toolsErr = err
			return
		}
		for _, b := range []struct {
			out      *string
			pkg, tag string
		}{
			{&meshctlBin, "./cmd/meshctl", ""},
			{&xdsclient, "./examples/apps/xdsclient", ""},
			{&xdsclientID, "./examples/apps/xdsclient", "meshdcreds"},
		} {
			*b.out = filepath.Join(dir, filepath.Base(b.pkg)+b.tag)
			cmd := exec.Command("go", "build", "-tags", b.tag, "-o", *b.out, b.pkg)
			cmd.Dir = harness.RepoRoot()
			if msg, err := cmd.CombinedOutput(); err != nil {
				toolsErr = fmt.Errorf("go build %s: %w\n%s", b.pkg, err, msg)
				return
			}
		}
	})
	if toolsErr != nil {
		t.Fatal(toolsErr)
	}
	return meshctlBin, xdsclient, xdsclientID
}

// controlPlane is go-control-plane's ADS server over mTLS, one snapshot
// per node ID.
type controlPlane struct {
	addr    string
	cache   cachev3.SnapshotCache
	mu      sync.Mutex
	version int
}

func startControlPlane(t *testing.T, s *harness.Sentry) *controlPlane {
	t.Helper()
	src := s.Source(t, "controlplane", "meshd-system")
	tlsCfg := tlsconfig.MTLSServerConfig(src, src, tlsconfig.AuthorizeMemberOf(spiffeid.RequireTrustDomainFromString(td)))
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsCfg)))
	cp := &controlPlane{cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)}
	ctx, cancel := context.WithCancel(context.Background())
	srv := serverv3.NewServer(ctx, cp.cache, nil)
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	listenerservice.RegisterListenerDiscoveryServiceServer(gs, srv)
	routeservice.RegisterRouteDiscoveryServiceServer(gs, srv)
	clusterservice.RegisterClusterDiscoveryServiceServer(gs, srv)
	endpointservice.RegisterEndpointDiscoveryServiceServer(gs, srv)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp.addr = l.Addr().String()
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(func() { gs.Stop(); cancel() })
	return cp
}

// set installs a snapshot for node: grpcxds's resources of echo.default
// (the Cluster changed by mod, if given) and a ClusterLoadAssignment of
// the given sidecar addresses and health.
func (cp *controlPlane) set(t *testing.T, node string, eps []endpoint, mod func(*clusterv3.Cluster)) {
	t.Helper()
	r, err := grpcxds.Build(app, ns, td, grpcxds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if mod != nil {
		mod(r.Cluster)
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: grpcxds.Name(app, ns)}
	// grpc-go drops a locality without a load_balancing_weight.
	loc := &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{}, LoadBalancingWeight: wrapperspb.UInt32(1)}
	for _, e := range eps {
		host, port, _ := net.SplitHostPort(e.addr)
		p, _ := strconv.Atoi(port)
		hs := corev3.HealthStatus_HEALTHY
		if !e.healthy {
			hs = corev3.HealthStatus_UNHEALTHY
		}
		loc.LbEndpoints = append(loc.LbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)},
				}}},
			}},
			HealthStatus: hs,
		})
	}
	cla.Endpoints = []*endpointv3.LocalityLbEndpoints{loc}
	if err := cla.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	cp.mu.Lock()
	cp.version++
	v := strconv.Itoa(cp.version)
	cp.mu.Unlock()
	snap, err := cachev3.NewSnapshot(v, map[resource.Type][]types.Resource{
		resource.ListenerType: {r.Listener},
		resource.RouteType:    {r.Route},
		resource.ClusterType:  {r.Cluster},
		resource.EndpointType: {cla},
	})
	if err != nil {
		t.Fatal(err)
	}
	// No snap.Consistent(): it looks for RDS names in Envoy's filter
	// chains, not in an API listener, and so finds the route unreferenced.
	if err := cp.cache.SetSnapshot(context.Background(), node, snap); err != nil {
		t.Fatal(err)
	}
}

type endpoint struct {
	addr    string
	healthy bool
}

// client is a running proxyless client process.
type client struct {
	t    *testing.T
	svid svidfiles.Paths // the files meshctl svid keeps
	in   io.WriteCloser
	out  *bufio.Scanner
	p    *harness.Process
}

type result struct {
	Calls     int            `json:"calls"`
	Instances map[string]int `json:"instances"`
	Callers   map[string]int `json:"callers"`
	Errors    map[string]int `json:"errors"`
}

// clientOpts vary a client: checkID runs the client built with
// xds/grpccreds; svidArgs are more flags of `meshctl svid`; noSPIFFE
// leaves GRPC_EXPERIMENTAL_XDS_MTLS_SPIFFE unset.
type clientOpts struct {
	checkID  bool
	noSPIFFE bool
	svidArgs []string
}

// startClient runs `meshctl svid` for appID (its SVID files and bootstrap,
// node ID = appID) and the proxyless client on top of them.
func startClient(t *testing.T, s *harness.Sentry, cpAddr string, appID string, o clientOpts) *client {
	t.Helper()
	meshctl, xc, xcID := tools(t)
	if o.checkID {
		xc = xcID
	}
	dir := filepath.Join(t.TempDir(), "svid-"+appID)
	boot := filepath.Join(t.TempDir(), "bootstrap-"+appID+".json")
	args := []string{"svid",
		"--app-id", appID, "--namespace", ns, "--sentry-address", s.Addr,
		"--trust-anchors-file", s.BundleFile(), "--token-file", s.TokenFile(t, appID, ns),
		"--svid-dir", dir, "--bootstrap-file", boot, "--xds-server", cpAddr, "--node-id", appID,
		"--refresh-interval", "1s"}
	harness.Start(t, "meshctl-svid-"+appID, meshctl, append(args, o.svidArgs...)...)
	p := svidfiles.PathsIn(dir)
	deadline := time.Now().Add(30 * time.Second)
	for _, f := range []string{boot, p.Cert} {
		for {
			if _, err := os.Stat(f); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("meshctl svid wrote no %s in 30s", f)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	cmd := exec.Command(xc, "--target", "xds:///"+grpcxds.Name(app, ns), "--timeout", "5s")
	cmd.Env = append(os.Environ(), "GRPC_XDS_BOOTSTRAP="+boot,
		"GRPC_GO_LOG_SEVERITY_LEVEL=warning", "GRPC_GO_LOG_VERBOSITY_LEVEL=0")
	if !o.noSPIFFE {
		cmd.Env = append(cmd.Env, "GRPC_EXPERIMENTAL_XDS_MTLS_SPIFFE=true")
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr harness.LogBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("xdsclient %s stderr:\n%s", appID, stderr.String())
		}
	})
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	return &client{t: t, svid: p, in: in, out: sc}
}

// do sends one command and reads its result.
func (c *client) do(cmd string) result {
	c.t.Helper()
	if _, err := fmt.Fprintln(c.in, cmd); err != nil {
		c.t.Fatalf("xdsclient %q: %v", cmd, err)
	}
	if !c.out.Scan() {
		c.t.Fatalf("xdsclient %q: no answer (%v)", cmd, c.out.Err())
	}
	var r result
	if err := json.Unmarshal(c.out.Bytes(), &r); err != nil {
		c.t.Fatalf("xdsclient %q: %v: %s", cmd, err, c.out.Bytes())
	}
	return r
}

// until repeats cmd until ok holds for its result, for at most d.
func (c *client) until(cmd string, d time.Duration, ok func(result) bool) result {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		r := c.do(cmd)
		if ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("after %s, %q still gives %+v", d, cmd, r)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// writeEchoPolicy writes the callee namespace's policy into dir: only the
// proxyless clients "client" and "client2" may call.
func writeEchoPolicy(t *testing.T, policyDir string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(policyDir, ns), 0o755); err != nil {
		t.Fatal(err)
	}
	rego := `package mesh.authz

allowed := {"spiffe://cluster.local/ns/default/client", "spiffe://cluster.local/ns/default/client2"}

allow if {
	input.source.spiffe_id in allowed
	input.request.protocol == "grpc"
	startswith(input.request.path, "/grpc.testing.TestService/")
}
`
	if err := os.WriteFile(filepath.Join(policyDir, ns, "echo.rego"), []byte(rego), 0o644); err != nil {
		t.Fatal(err)
	}

}

func TestProxylessGRPC(t *testing.T) {
	b := harness.Build(t)
	tools(t)
	s := harness.StartSentry(t, b, "")

	policyDir := t.TempDir()
	writeEchoPolicy(t, policyDir)

	names := []string{"g1", "g2", "g3"}
	var eps []endpoint
	for _, n := range names {
		a := harness.StartGRPCEcho(t, b, n, 0)
		sc := harness.StartSidecar(t, b, s, harness.SidecarConfig{
			AppID: app, Namespace: ns, AppPort: a.Port, AppProtocol: "grpc",
			Extra: []string{"--policy-dir", policyDir, "--policy-default", "deny"},
		})
		harness.WaitServing(t, sc.Ports.InternalAddr(), 30*time.Second)
		eps = append(eps, endpoint{addr: sc.Ports.InternalAddr(), healthy: true})
	}

	cp := startControlPlane(t, s)
	for _, node := range []string{"client", "intruder"} {
		cp.set(t, node, eps, nil)
	}
	c := startClient(t, s, cp.addr, "client", clientOpts{})

	// Until all three sidecars are connected, round robin spreads over
	// those that are; then a round of 30 gives each exactly 10.
	all3 := func(r result) bool { return len(r.Errors) == 0 && len(r.Instances) == 3 }
	c.until("unary 6", 30*time.Second, all3)

	t.Run("UnaryRoundRobin", func(t *testing.T) {
		r := c.do("unary 30")
		checkSpread(t, r, map[string]int{"g1": 10, "g2": 10, "g3": 10})
	})
	t.Run("StreamingRoundRobin", func(t *testing.T) {
		r := c.do("stream 30")
		checkSpread(t, r, map[string]int{"g1": 10, "g2": 10, "g3": 10})
	})

	t.Run("UnhealthyLeavesRotation", func(t *testing.T) {
		// g3's sidecar is the third endpoint: the control plane marks it
		// UNHEALTHY and the client stops calling it.
		down := []endpoint{eps[0], eps[1], {addr: eps[2].addr, healthy: false}}
		pushed := time.Now()
		cp.set(t, "client", down, nil)
		c.until("unary 6", 10*time.Second, func(r result) bool { return len(r.Errors) == 0 && r.Instances["g3"] == 0 })
		t.Logf("UNHEALTHY pushed -> out of the rotation within %v", time.Since(pushed).Round(time.Millisecond))
		checkSpread(t, c.do("unary 30"), map[string]int{"g1": 15, "g2": 15})
		checkSpread(t, c.do("stream 30"), map[string]int{"g1": 15, "g2": 15})

		cp.set(t, "client", eps, nil) // healthy again: back in the rotation
		c.until("unary 6", 10*time.Second, all3)
		checkSpread(t, c.do("unary 30"), map[string]int{"g1": 10, "g2": 10, "g3": 10})
	})

	t.Run("WrongSANRefused", func(t *testing.T) {
		// The Cluster names another SPIFFE ID than the sidecars carry: the
		// client refuses their certificates, no call reaches an app.
		cp.set(t, "client2", eps, func(cl *clusterv3.Cluster) {
			other, err := grpcxds.Cluster("other", ns, td, grpcxds.Options{})
			if err != nil {
				t.Fatal(err)
			}
			cl.TransportSocket = other.TransportSocket
		})
		w := startClient(t, s, cp.addr, "client2", clientOpts{})
		r := w.do("unary 6")
		if r.Calls != 6 || len(r.Instances) != 0 {
			t.Fatalf("wrong SAN: %+v, want 6 failed calls", r)
		}
		for e, n := range r.Errors {
			if !strings.HasPrefix(e, "Unavailable: ") || !strings.Contains(e, "do not match any of the accepted SANs") ||
				!strings.Contains(e, "spiffe://cluster.local/ns/default/echo") {
				t.Errorf("wrong SAN: %d calls failed with %q, want Unavailable naming the SAN mismatch", n, e)
			}
		}
		// The same client, once the Cluster names the right ID, gets through.
		cp.set(t, "client2", eps, nil)
		r = w.until("unary 6", 15*time.Second, func(r result) bool { return len(r.Errors) == 0 && len(r.Instances) == 3 })
		if r.Callers["client2.default"] != 6 {
			t.Errorf("caller identity seen by the apps %v, want client2.default", r.Callers)
		}
	})

	t.Run("ControlPlaneIDChecked", func(t *testing.T) {
		// A client built with xds/grpccreds takes the bootstrap's
		// "meshd_spiffe" credentials: it talks to the control plane whose
		// SVID is spiffe://cluster.local/ns/meshd-system/controlplane (the
		// default ID), without GRPC_EXPERIMENTAL_XDS_MTLS_SPIFFE.
		ok := startClient(t, s, cp.addr, "client", clientOpts{checkID: true, noSPIFFE: true})
		ok.until("unary 6", 15*time.Second, all3)
		checkSpread(t, ok.do("unary 6"), map[string]int{"g1": 2, "g2": 2, "g3": 2})

		// Told to expect another ID, it refuses the control plane and so
		// never learns where echo.default is.
		bad := startClient(t, s, cp.addr, "client", clientOpts{checkID: true, noSPIFFE: true,
			svidArgs: []string{"--xds-server-id", "spiffe://cluster.local/ns/meshd-system/other"}})
		// Every call fails. The failure names both IDs once the refused
		// handshake has reached the channel; before that, on a loaded
		// machine, grpc-go may report only that the resolver has no
		// addresses yet.
		namesIDs := func(r result) bool {
			for e := range r.Errors {
				if !strings.HasPrefix(e, "Unavailable: ") || !strings.Contains(e, "control plane is spiffe://cluster.local/ns/meshd-system/controlplane, want spiffe://cluster.local/ns/meshd-system/other") {
					return false
				}
			}
			return len(r.Errors) > 0
		}
		var seen []result
		bad.until("unary 2", 30*time.Second, func(r result) bool {
			seen = append(seen, r)
			return namesIDs(r)
		})
		for _, r := range seen {
			if r.Calls != 2 || len(r.Instances) != 0 {
				t.Fatalf("client expecting another control plane: %+v, want 2 failed calls", r)
			}
		}
	})

	t.Run("PolicyDeniesCaller", func(t *testing.T) {
		x := startClient(t, s, cp.addr, "intruder", clientOpts{})
		for _, cmd := range []string{"unary 6", "stream 6"} {
			r := x.do(cmd)
			if r.Calls != 6 || len(r.Instances) != 0 {
				t.Fatalf("intruder %s: %+v, want 6 denied calls", cmd, r)
			}
			for e, n := range r.Errors {
				if !strings.HasPrefix(e, "PermissionDenied: ") ||
					!strings.Contains(e, "denied for spiffe://cluster.local/ns/default/intruder POST /grpc.testing.TestService/") {
					t.Errorf("intruder %s: %d calls failed with %q, want PermissionDenied naming the caller's SPIFFE ID", cmd, n, e)
				}
			}
		}
		// The allowed client still gets through meanwhile.
		checkSpread(t, c.do("unary 3"), map[string]int{"g1": 1, "g2": 1, "g3": 1})
	})
}

// checkSpread asserts a result: no errors, the calls per instance, and that
// every callee app was told the caller identity from the certificate.
func checkSpread(t *testing.T, r result, want map[string]int) {
	t.Helper()
	if len(r.Errors) != 0 {
		t.Errorf("errors: %v", r.Errors)
	}
	total := 0
	for _, n := range want {
		total += n
	}
	if len(r.Instances) != len(want) {
		t.Errorf("calls per instance %v, want %v", r.Instances, want)
	}
	for k, n := range want {
		if r.Instances[k] != n {
			t.Errorf("calls per instance %v, want %v", r.Instances, want)
			break
		}
	}
	if r.Callers["client.default"] != total {
		t.Errorf("caller identity seen by the apps %v, want client.default on all %d", r.Callers, total)
	}
}

// TestProxylessSVIDRotation: with 6s SVIDs, `meshctl svid` rewrites the
// client's files at every rotation and grpc-go's file_watcher picks them
// up. Once the client's first SVID has expired, the callee's sidecar is
// restarted, so the client must handshake again: the call goes through
// only if it presents a rotated, valid SVID.
func TestProxylessSVIDRotation(t *testing.T) {
	b := harness.Build(t)
	tools(t)
	s := harness.StartSentry(t, b, "", "--workload-ttl", "6s")
	a := harness.StartGRPCEcho(t, b, "g1", 0)
	cfg := harness.SidecarConfig{AppID: app, Namespace: ns, AppPort: a.Port, AppProtocol: "grpc"}
	sc := harness.StartSidecar(t, b, s, cfg)
	cfg.Ports = sc.Ports
	harness.WaitServing(t, sc.Ports.InternalAddr(), 30*time.Second)

	cp := startControlPlane(t, s)
	cp.set(t, "client", []endpoint{{addr: sc.Ports.InternalAddr(), healthy: true}}, nil)
	c := startClient(t, s, cp.addr, "client", clientOpts{})
	ok := func(r result) bool { return len(r.Errors) == 0 && r.Instances["g1"] == r.Calls }
	c.until("unary 3", 30*time.Second, ok)

	first := readLeaf(t, c.svid.Cert)
	deadline := first.NotAfter.Add(15 * time.Second)
	for time.Now().Before(first.NotAfter.Add(time.Second)) {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for the first SVID to expire")
		}
		time.Sleep(100 * time.Millisecond)
	}
	cur := readLeaf(t, c.svid.Cert)
	if cur.SerialNumber.Cmp(first.SerialNumber) == 0 || !time.Now().Before(cur.NotAfter) {
		t.Fatalf("svid.pem was not rotated: serial %v (first %v), not after %v", cur.SerialNumber, first.SerialNumber, cur.NotAfter)
	}
	checkSpread(t, c.do("unary 3"), map[string]int{"g1": 3}) // the old connection still works

	if err := sc.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	sc = harness.StartSidecar(t, b, s, cfg)
	harness.WaitServing(t, sc.Ports.InternalAddr(), 30*time.Second)
	c.until("unary 3", 20*time.Second, ok)
	checkSpread(t, c.do("stream 3"), map[string]int{"g1": 3})
}

// readLeaf returns the leaf certificate of a PEM chain file.
func readLeaf(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := certs.ParseCertsPEM(raw)
	if err != nil {
		t.Fatal(err)
	}
	return chain[0]
}
