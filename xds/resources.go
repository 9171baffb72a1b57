package xds

import (
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshd/meshd/discovery"
)

// ResourceName is the xDS name of an app's resources: "{app}.{namespace}",
// what grpc-go dials as xds:///orders.default. The Cluster, its
// ClusterLoadAssignment and (with a proxyless AppHook) the Listener and
// RouteConfiguration of an app all carry it.
func ResourceName(t discovery.Target) string { return t.String() }

// AppResources is what an AppHook builds for one app, on top of the plain
// Cluster and ClusterLoadAssignment.
type AppResources struct {
	// Listeners and Routes are added to the app's resources (proxyless
	// gRPC: an API listener and its RouteConfiguration, both named
	// ResourceName(app)).
	Listeners []types.Resource
	Routes    []types.Resource
	// Cluster, when not nil, replaces the plain EDS Cluster (proxyless
	// gRPC: the same Cluster with the mesh mTLS transport socket). It must
	// keep the name ResourceName(app).
	Cluster types.Resource
}

// AppHook builds extra resources for one app from its endpoints. The
// server calls it on every change of the app; an error (or a resource that
// fails ValidateAll) keeps the app's last good resources.
type AppHook func(app discovery.Target, eps []Endpoint) (AppResources, error)

// ConnectTimeout is the connect timeout of the Clusters served.
const ConnectTimeout = 5 * time.Second

// Cluster is the plain EDS Cluster of app: round robin, endpoints from
// the ClusterLoadAssignment of the same name over ADS.
func Cluster(app discovery.Target) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 ResourceName(app),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			ResourceApiVersion:    corev3.ApiVersion_V3,
		}},
		LbPolicy:       clusterv3.Cluster_ROUND_ROBIN,
		ConnectTimeout: durationpb.New(ConnectTimeout),
	}
}

// LoadAssignment is the ClusterLoadAssignment of app: one locality (empty
// ID, weight 1) holding the endpoints' internal (mTLS) addresses, each HEALTHY or
// UNHEALTHY as the backend says.
func LoadAssignment(app discovery.Target, eps []Endpoint) (*endpointv3.ClusterLoadAssignment, error) {
	lbs := make([]*endpointv3.LbEndpoint, 0, len(eps))
	for _, ep := range eps {
		host, ps, err := net.SplitHostPort(ep.Address)
		if err != nil {
			return nil, fmt.Errorf("xds: %s: endpoint %q: %w", app, ep.Address, err)
		}
		port, err := strconv.ParseUint(ps, 10, 16)
		if err != nil || port == 0 {
			return nil, fmt.Errorf("xds: %s: endpoint %q: bad port", app, ep.Address)
		}
		health := corev3.HealthStatus_HEALTHY
		if !ep.Healthy {
			health = corev3.HealthStatus_UNHEALTHY
		}
		lbs = append(lbs, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
				}}},
			}},
			HealthStatus: health,
		})
	}
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: ResourceName(app),
		// grpc-go refuses a locality without an ID and drops one without a
		// weight: an empty ID and weight 1.
		Endpoints: []*endpointv3.LocalityLbEndpoints{{
			Locality: &corev3.Locality{}, LbEndpoints: lbs, LoadBalancingWeight: wrapperspb.UInt32(1),
		}},
	}, nil
}

// validator is what the envoy protos generate (protoc-gen-validate).
type validator interface{ ValidateAll() error }

// Validate runs the resource's ValidateAll (every envoy proto has one).
// A resource without one is refused: nothing enters a snapshot unchecked.
func Validate(r types.Resource) error {
	v, ok := r.(validator)
	if !ok {
		return fmt.Errorf("xds: %T has no ValidateAll", r)
	}
	if err := v.ValidateAll(); err != nil {
		return fmt.Errorf("xds: %s %q: %w", typeName(r), cachev3.GetResourceName(r), err)
	}
	return nil
}

func typeName(r types.Resource) string { return string(proto.MessageName(r).Name()) }

// versioned is a resource with the version clients see for it (delta xDS):
// a hash of its deterministic encoding, so an identical rebuild is no
// change.
type versioned struct {
	res     types.Resource
	version string
}

func newVersioned(r types.Resource) (versioned, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return versioned{}, fmt.Errorf("xds: marshal %s: %w", typeName(r), err)
	}
	h := fnv.New64a()
	h.Write(b)
	return versioned{res: r, version: hex.EncodeToString(h.Sum(nil))}, nil
}

// appResources are one app's built resources, each validated.
type appResources struct {
	cluster, cla versioned
	listeners    []versioned
	routes       []versioned
}

var errNameChanged = errors.New("an AppHook's Cluster must keep the app's resource name")

// buildApp builds and validates app's resources.
func buildApp(app discovery.Target, eps []Endpoint, hook AppHook) (*appResources, error) {
	var cluster types.Resource = Cluster(app)
	cla, err := LoadAssignment(app, eps)
	if err != nil {
		return nil, err
	}
	var extra AppResources
	if hook != nil {
		if extra, err = hook(app, eps); err != nil {
			return nil, fmt.Errorf("xds: %s: app hook: %w", app, err)
		}
		if extra.Cluster != nil {
			if cachev3.GetResourceName(extra.Cluster) != ResourceName(app) {
				return nil, fmt.Errorf("xds: %s: %w", app, errNameChanged)
			}
			cluster = extra.Cluster
		}
	}
	out := &appResources{}
	all := []types.Resource{cluster, cla}
	all = append(all, extra.Listeners...)
	all = append(all, extra.Routes...)
	vs := make([]versioned, len(all))
	for i, r := range all {
		if err := Validate(r); err != nil {
			return nil, err
		}
		if vs[i], err = newVersioned(r); err != nil {
			return nil, err
		}
	}
	out.cluster, out.cla = vs[0], vs[1]
	out.listeners = vs[2 : 2+len(extra.Listeners)]
	out.routes = vs[2+len(extra.Listeners):]
	return out, nil
}
