package xds

import (
	"log/slog"
	"net"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/discovery/xds/policypb"
)

// FuzzHandle feeds arbitrary resource bodies to the response handler, as
// a hostile or broken control plane could: it must never panic, and what
// it accepts must be well formed in the Cache.
func FuzzHandle(f *testing.F) {
	cla, _ := proto.Marshal(&endpointv3.ClusterLoadAssignment{ClusterName: "orders.default", Endpoints: []*endpointv3.LocalityLbEndpoints{{}}})
	ps, _ := proto.Marshal(&policypb.PolicySet{Name: "default", Files: []*policypb.File{{Path: "a.rego", Content: []byte("package mesh.authz\n")}}})
	f.Add(cla, "orders.default", false)
	f.Add(ps, "default", true)
	f.Add([]byte{0x0a, 0x01, 0x41}, "A", false)
	f.Fuzz(func(t *testing.T, body []byte, name string, policy bool) {
		c := discovery.NewCache(discovery.Options{Logger: slog.New(slog.DiscardHandler)})
		defer c.Close()
		r := newResolver(c, slog.New(slog.DiscardHandler), "fuzz")
		tu := EndpointType
		if policy {
			tu = policypb.TypeURL
		}
		resp := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: tu, Nonce: "n",
			Resources: []*discoveryv3.Resource{{Name: name, Version: "1", Resource: &anypb.Any{TypeUrl: tu, Value: body}}}}
		if err := r.handle(resp); err != nil {
			return
		}
		for _, tg := range c.Targets() {
			for _, ep := range c.Endpoints(tg) {
				if _, _, err := net.SplitHostPort(ep.Address); err != nil {
					t.Fatalf("accepted endpoint %q of %v", ep.Address, tg)
				}
			}
		}
	})
}
