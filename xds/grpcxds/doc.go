// Package grpcxds builds the xDS resources a proxyless gRPC client (grpc-go's
// own "xds" resolver and credentials) needs to call a meshd app: for the app
// {app} in namespace {ns}, the Listener (an API listener with the HTTP
// connection manager and the router filter), its RouteConfiguration, and the
// Cluster (EDS, round robin), all named "{app}.{ns}", the name a client dials
// as xds:///{app}.{ns}. The ClusterLoadAssignment of the same name (the
// sidecars' internal mTLS ports) is the control plane's to build.
//
// The Cluster's transport socket is an UpstreamTlsContext whose identity and
// roots come from a certificate provider instance named in the client's
// bootstrap (grpc-go's file_watcher plugin over the files certs/svidfiles
// keeps current), and whose SAN matcher names exactly the callee sidecar's
// SPIFFE ID spiffe://{trust-domain}/ns/{ns}/{app}, so the client verifies the
// callee as a meshd sidecar does.
//
// The functions are pure: the same input gives the same resources, and every
// resource has passed its ValidateAll before it is returned.
package grpcxds
