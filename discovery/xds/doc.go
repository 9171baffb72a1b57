// Package xds is the "xds" discovery backend (--resolver xds): a delta ADS
// client of meshd's control plane (package github.com/meshd/meshd/xds,
// cmd/controlplane), feeding the sidecar's discovery Cache, so that Pick
// stays a cache read.
//
// The stream runs over mTLS with the sidecar's own rotating SVID
// (BuildOptions.SVIDSource); the control plane must show the SPIFFE ID of
// the --resolver-config file (default
// spiffe://{td}/ns/meshd-system/controlplane).
//
// Endpoints are subscribed on demand: the resolver is a
// discovery.Watcher, and the first Pick of an app subscribes to its
// ClusterLoadAssignment ("{app}.{namespace}"); the call waits for the
// answer at most the Cache's FirstResolveTimeout (2s; an app the control
// plane does not serve to this namespace ends there as unknown). Endpoint
// health comes from the control plane (UNHEALTHY endpoints get no calls).
//
// Policies: the resolver subscribes to every meshd.policy.v1.PolicySet of
// its namespace (its own and _mesh) and is a discovery.PolicyFeed: the
// sidecar loads its policy engine from them (no --policy-dir needed) and
// hands every later tree to the engine's ReloadFS, the same check-then-swap
// as a file reload.
//
// Bad input: a response with a resource that fails its ValidateAll, a
// name that is not {app}.{namespace}, an endpoint without address or port,
// or a policy tree the engine refuses, is rejected whole: a NACK with the
// reason goes back to the control plane, the error is counted
// (meshd_discovery_errors_total) and the last good state stays.
//
// Control plane down: the Cache keeps the last endpoints and the engine
// the last policies; the stream reconnects with backoff (100ms doubling to
// 5s, jittered) and subscribes again with the versions it has, so only
// what changed meanwhile is sent. At start, Build waits for the first
// answer (StartTimeout, 10s); without it the sidecar does not start (it
// has nothing to route with) and says so.
package xds
