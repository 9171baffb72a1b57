// Package grpccreds registers with grpc-go's xDS bootstrap the channel
// credentials type "meshd_spiffe": mTLS to the control plane with the
// client's SVID files (certs/svidfiles), accepting only a server
// certificate that chains to the mesh's roots and carries exactly the
// control plane's SPIFFE ID. A proxyless grpc-go app opts in with one
// import:
//
//	import _ "github.com/meshd/meshd/xds/grpccreds"
//
// The bootstrap xds/grpcbootstrap writes lists "meshd_spiffe" first and
// grpc-go's own "tls" second; grpc-go takes the first type it knows, so an
// app without the import falls back to "tls", which accepts any SVID of the
// mesh as the control plane (see docs/xds.md, Proxyless gRPC).
//
// The config of the type, in the bootstrap's channel_creds:
//
//	{"certificate_file": ".../svid.pem", "private_key_file": ".../svid-key.pem",
//	 "ca_certificate_file": ".../bundle.pem",
//	 "server_spiffe_id": "spiffe://cluster.local/ns/meshd-system/controlplane",
//	 "refresh_interval": "60s"}
//
// The files are re-read by grpc-go's file_watcher provider every
// refresh_interval, so rotations need no restart.
package grpccreds
