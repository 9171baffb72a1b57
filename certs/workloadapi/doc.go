// Package workloadapi serves the SPIFFE Workload API on a unix socket, so an
// app next to the sidecar can fetch its own X509-SVID and trust bundle with
// go-spiffe's workloadapi client (NewX509Source, FetchX509SVID,
// WatchX509Context, ...) and receives a new one at every rotation.
//
// It serves FetchX509SVID and FetchX509Bundles (both streaming: a message on
// connect and one after every change of the Source); the JWT and WIT methods
// answer Unimplemented, except FetchJWTBundles, which streams an empty set
// (meshd has no JWT authorities). As the SPIFFE Workload API spec requires, every call
// must carry the metadata "workload.spiffe.io: true" or it fails with
// InvalidArgument.
//
// There is no peer attestation: the socket is created with mode 0600, so only
// processes of the sidecar's user can connect; it serves exactly the one
// identity of its sidecar.
//
//	srv, err := workloadapi.Listen("/run/meshd/workload.sock", certsSource)
//	go srv.Serve(ctx)        // until ctx is done or Close
//	defer srv.Close()        // stops and removes the socket
//	// apps: SPIFFE_ENDPOINT_SOCKET=unix:///run/meshd/workload.sock
package workloadapi
