// Package grpcbootstrap writes the xDS bootstrap file of a proxyless gRPC
// client: the JSON that grpc-go reads from the file named by
// GRPC_XDS_BOOTSTRAP (or from GRPC_XDS_BOOTSTRAP_CONFIG) before its "xds"
// resolver dials xds:///{app}.{ns}.
//
// The bootstrap names
//
//   - xds_servers: the meshd control plane, reached over mTLS with grpc-go's
//     "tls" channel credentials: the client's SVID files as its certificate,
//     and the mesh's trust bundle both as a CA file and as a SPIFFE trust
//     bundle map;
//   - node: the client's node ID;
//   - certificate_providers: one file_watcher instance (named as in
//     xds/grpcxds, "meshd" by default) over the same SVID files, which the
//     Clusters' UpstreamTlsContext names for the client's certificate and for
//     the roots that verify the callee sidecar.
//
// The files are the ones certs/svidfiles keeps current.
//
// With Config.ControlPlaneID set, the first channel credentials listed are
// "meshd_spiffe" (xds/grpccreds): an app that imports that package accepts
// only a control plane with exactly that SPIFFE ID. grpc-go takes the first
// type it knows, so an app without the import uses "tls", next in the list.
//
// grpc-go's "tls" verifies the control plane's certificate in one of two ways. With
// GRPC_EXPERIMENTAL_XDS_MTLS_SPIFFE=true in the client's environment it uses
// the SPIFFE bundle map: the chain must verify against the roots of the
// trust domain of the certificate's SPIFFE ID, which is how a sentry-issued
// control-plane SVID (one URI SAN, no host name) is accepted. Without it, it
// verifies against the CA file and checks the server_uri's host name against
// the certificate's DNS or IP SANs, which a sentry-issued SVID does not
// carry. Neither way checks the control plane's exact SPIFFE ID: any SVID of
// the mesh is taken as the control plane (see docs/xds.md, Proxyless gRPC), which
// is why "meshd_spiffe" comes first.
package grpcbootstrap
