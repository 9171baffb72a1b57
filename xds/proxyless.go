package xds

import (
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/xds/grpcxds"
)

// ProxylessHook is the AppHook that serves every app to proxyless grpc-go
// clients as well (xds/grpcxds): an API Listener and its
// RouteConfiguration, and the app's Cluster with the mesh mTLS transport
// socket (the client's SVID from a certificate provider instance, the
// callee's SPIFFE ID matched exactly). Sidecars subscribe only to
// ClusterLoadAssignments and PolicySets, so it changes nothing for them.
func ProxylessHook(td spiffeid.TrustDomain, opts grpcxds.Options) AppHook {
	return func(app discovery.Target, _ []Endpoint) (AppResources, error) {
		r, err := grpcxds.Build(app.AppID, app.Namespace, td.String(), opts)
		if err != nil {
			return AppResources{}, err
		}
		return AppResources{
			Listeners: []types.Resource{r.Listener},
			Routes:    []types.Resource{r.Route},
			Cluster:   r.Cluster,
		}, nil
	}
}
