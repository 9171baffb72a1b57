// Package discovery resolves an app ID and namespace to the endpoints of its
// sidecars (their internal mTLS addresses).
//
// Backends (static, mdns, consul, kubernetes, xds) are shaped like grpc-go's
// resolvers: they watch their source and push complete endpoint sets into a
// watch-fed Cache. The data plane never asks a backend anything on the hot
// path: it reads the Cache, whose per-target picker is immutable and rebuilt
// on every change, so Pick neither locks nor allocates.
package discovery
