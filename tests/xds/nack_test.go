package xds_test

import (
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshd/meshd/discovery/xds/policypb"
	"github.com/meshd/meshd/tests/harness"
	"github.com/meshd/meshd/xds"
)

// scripted is a delta ADS server the test drives by hand: it sends what
// the test tells it to (no validation: it plays a broken control plane) and
// records every ACK and NACK.
type scripted struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	mu      sync.Mutex
	stream  discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer
	nonce   int
	replies chan *discoveryv3.DeltaDiscoveryRequest
	initial func(typeURL string) []proto.Message
}

func (s *scripted) DeltaAggregatedResources(st discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	s.mu.Lock()
	s.stream = st
	s.mu.Unlock()
	for {
		req, err := st.Recv()
		if err != nil {
			return err
		}
		if req.GetResponseNonce() != "" {
			s.replies <- req
			continue
		}
		if err := s.send(req.GetTypeUrl(), s.initial(req.GetTypeUrl())...); err != nil {
			return err
		}
	}
}

func (s *scripted) send(typeURL string, msgs ...proto.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stream == nil {
		return errors.New("no stream")
	}
	s.nonce++
	resp := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: typeURL, Nonce: string(rune('a' + s.nonce))}
	for i, m := range msgs {
		a, err := anypb.New(m)
		if err != nil {
			return err
		}
		var name string
		switch m := m.(type) {
		case *clusterv3.Cluster:
			name = m.GetName()
		case *endpointv3.ClusterLoadAssignment:
			name = m.GetClusterName()
		case *policypb.PolicySet:
			name = m.GetName()
		}
		resp.Resources = append(resp.Resources, &discoveryv3.Resource{Name: name, Version: string(rune('0'+s.nonce)) + string(rune('0'+i)), Resource: a})
	}
	return s.stream.Send(resp)
}

// reply waits for the sidecar's answer to the last response.
func (s *scripted) reply(t *testing.T) *discoveryv3.DeltaDiscoveryRequest {
	t.Helper()
	select {
	case r := <-s.replies:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no ACK/NACK within 10s")
		return nil
	}
}

func policySet(name string, files map[string]string) *policypb.PolicySet {
	ps := &policypb.PolicySet{Name: name}
	for p, c := range files {
		ps.Files = append(ps.Files, &policypb.File{Path: p, Content: []byte(c)})
	}
	return ps
}

// TestMeshdNACKsBadResources: a control plane that sends a resource that
// fails validation, or a policy that does not compile, gets a NACK with
// the reason from meshd, and the sidecar keeps routing and deciding with
// the last good state.
func TestMeshdNACKsBadResources(t *testing.T) {
	b := harness.Build(t)
	s := harness.StartSentry(t, b, "")
	src := s.Source(t, "controlplane", "meshd-system")
	td := spiffeid.RequireTrustDomainFromString("cluster.local")

	p1 := harness.NewSidecarPorts(t)
	e1 := harness.StartEcho(t, b, "o1", 0)
	harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "orders", AppPort: e1.Port, Ports: p1})
	cla, err := xds.LoadAssignment(target("orders", "default"), []xds.Endpoint{{Address: p1.InternalAddr(), Healthy: true}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &scripted{replies: make(chan *discoveryv3.DeltaDiscoveryRequest, 16), initial: func(tu string) []proto.Message {
		switch tu {
		case xds.TypeURLs[0]:
			return []proto.Message{xds.Cluster(target("orders", "default"))}
		case xds.TypeURLs[1]:
			return []proto.Message{cla}
		case policypb.TypeURL:
			return []proto.Message{policySet("default", map[string]string{"authz.rego": allowFrontend})}
		}
		return nil
	}}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsconfig.MTLSServerConfig(src, src, tlsconfig.AuthorizeMemberOf(td)))))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	front := harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "frontend",
		Extra: []string{"--resolver", "xds", "--resolver-config", harness.XDSResolverFile(t, l.Addr().String())}})
	if r := srv.reply(t); r.GetErrorDetail() != nil { // the policies, at start
		t.Fatalf("initial policies NACKed: %v", r.GetErrorDetail())
	}
	// The first call subscribes to orders' endpoints.
	if code, who, err := call(front, "orders", "who"); code != http.StatusOK || who != "o1" {
		t.Fatalf("initial call: %d %s %v", code, who, err)
	}
	if r := srv.reply(t); r.GetErrorDetail() != nil {
		t.Fatalf("initial endpoints NACKed: %v", r.GetErrorDetail())
	}

	// An endpoint without an address fails ValidateAll.
	bad := proto.Clone(cla).(*endpointv3.ClusterLoadAssignment)
	bad.Endpoints[0].LbEndpoints[0].GetEndpoint().Address.GetSocketAddress().Address = ""
	if err := srv.send(xds.TypeURLs[1], bad); err != nil {
		t.Fatal(err)
	}
	r := srv.reply(t)
	if r.GetErrorDetail() == nil || !strings.Contains(r.GetErrorDetail().GetMessage(), "orders.default") ||
		!strings.Contains(r.GetErrorDetail().GetMessage(), "Address") {
		t.Errorf("bad ClusterLoadAssignment: reply %v; want a NACK naming the resource and the field", r)
	}
	t.Logf("NACK reason: %s", r.GetErrorDetail().GetMessage())
	if code, who, _ := call(front, "orders", "who"); code != http.StatusOK || who != "o1" {
		t.Errorf("after the NACK: %d %s; want the old endpoint still used", code, who)
	}

	// A resource name that is not {app}.{namespace}.
	noNS := proto.Clone(cla).(*endpointv3.ClusterLoadAssignment)
	noNS.ClusterName = "no-namespace"
	if err := srv.send(xds.TypeURLs[1], noNS); err != nil {
		t.Fatal(err)
	}
	if r := srv.reply(t); r.GetErrorDetail() == nil || !strings.Contains(r.GetErrorDetail().GetMessage(), "no-namespace") {
		t.Errorf("bad resource name: reply %v; want a NACK", r)
	}
	// A resource of a type the sidecar did not ask for.
	if err := srv.send(xds.TypeURLs[0], xds.Cluster(target("orders", "default"))); err != nil {
		t.Fatal(err)
	}
	if r := srv.reply(t); r.GetErrorDetail() == nil {
		t.Errorf("unasked type: reply %v; want a NACK", r)
	}

	// A policy that does not compile: NACKed with file and line, the last
	// good policy stays.
	if err := srv.send(policypb.TypeURL, policySet("default", map[string]string{"authz.rego": "package mesh.authz\n\nallow if {\n"})); err != nil {
		t.Fatal(err)
	}
	r = srv.reply(t)
	if r.GetErrorDetail() == nil || !strings.Contains(r.GetErrorDetail().GetMessage(), "default/authz.rego:") {
		t.Errorf("broken policy: reply %v; want a NACK with file:line", r)
	}
	t.Logf("NACK reason: %s", r.GetErrorDetail().GetMessage())
	// A policy file with a path outside its folder.
	if err := srv.send(policypb.TypeURL, policySet("default", map[string]string{"../x.rego": allowFrontend})); err != nil {
		t.Fatal(err)
	}
	if r := srv.reply(t); r.GetErrorDetail() == nil {
		t.Errorf("policy path ../x.rego: reply %v; want a NACK", r)
	}

	// Each rejection is counted in the sidecar's metrics.
	if n := harness.ScrapeCounter(t, "http://127.0.0.1:"+strconv.Itoa(front.Ports.Metrics)+"/metrics", "meshd_discovery_errors_total"); n < 5 {
		t.Errorf("meshd_discovery_errors_total = %v after 5 NACKs", n)
	}

	// A good policy change is ACKed and loaded by the frontend's engine
	// (its own inbound policy; orders here is not on xds).
	if err := srv.send(policypb.TypeURL, policySet("default", map[string]string{"authz.rego": allowFrontend, "close.rego": closeWho})); err != nil {
		t.Fatal(err)
	}
	if r := srv.reply(t); r.GetErrorDetail() != nil {
		t.Errorf("good policy NACKed: %v", r.GetErrorDetail())
	}
	eventually(t, 5*time.Second, "the good policy is loaded", func() error {
		if !strings.Contains(front.Log(), "policy: updated") {
			return errorf("no 'policy: updated' in the log")
		}
		return nil
	})
	// A good endpoint change after the NACKs is applied.
	e2 := harness.StartEcho(t, b, "o2", 0)
	p2 := harness.NewSidecarPorts(t)
	harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "orders", AppPort: e2.Port, Ports: p2})
	cla2, _ := xds.LoadAssignment(target("orders", "default"), []xds.Endpoint{{Address: p2.InternalAddr(), Healthy: true}})
	if err := srv.send(xds.TypeURLs[1], cla2); err != nil {
		t.Fatal(err)
	}
	if r := srv.reply(t); r.GetErrorDetail() != nil {
		t.Errorf("good CLA NACKed: %v", r.GetErrorDetail())
	}
	eventually(t, 5*time.Second, "calls go to the new endpoint", func() error {
		if _, who, _ := call(front, "orders", "who"); who != "o2" {
			return errorf("answered by %q", who)
		}
		return nil
	})
}
