// Package appchannel is the sidecar's client to its local application.
//
// A Channel speaks one of the app protocols of `--app-protocol`:
//
//	http   HTTP/1.1, pooled keep-alive connections
//	h2c    HTTP/2 over cleartext (prior knowledge), multiplexed
//	grpc   gRPC over h2c: HTTP/2 frames pass through, trailers included
//	https  HTTP/1.1 or HTTP/2 over TLS (ALPN)
//	grpcs  gRPC over HTTP/2 over TLS
//
// TLS to the app is encryption on the loopback hop, not authentication: as in
// Dapr, the app's certificate is not verified (the app is, by definition, the
// process next to the sidecar). Set Config.TLS to verify it anyway.
//
// Bodies stream in both directions and are never buffered; compression is
// never added or removed. A Channel is safe for concurrent use.
package appchannel
