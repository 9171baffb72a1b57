// Package proxy is meshd's data plane: the app-facing HTTP and gRPC servers,
// the mTLS transport between sidecars, and the inbound server that hands
// calls to the local app.
//
// Outbound (caller side), on the app-facing ports:
//
//	app --HTTP/1.1 or h2c--> Outbound: route.FromRequest (target + one normalized path)
//	    -> forward (forward.go): Resolver.Pick(ctx, target) -> per-target mTLS
//	    transport (callee SPIFFE ID checked in the handshake) -> callee
//	    sidecar's internal port; the pick's Done takes the attempt's outcome
//
// Between sidecars the protocol follows the caller's: gRPC and HTTP/2
// callers ride one multiplexed HTTP/2 connection per endpoint; HTTP/1.1
// callers ride a keep-alive pool of HTTP/1.1 mTLS connections (ALPN
// http/1.1), which costs each sidecar fewer goroutine hand-offs and
// syscalls per call (the callee runs the handler on the connection's own
// goroutine). HTTP/1.x is served and sent by proxy/internal/h1, HTTP/2 by
// proxy/internal/h2 (server and client; --h1-*/--h2-* nethttp fall back
// to net/http's). This departs from the original design's single pooled HTTP/2
// connection for speed (docs/architecture.md, "Decisions"); mTLS, identity
// and policy are the same on both.
// Request bodies of known length up to 8 KiB from HTTP/1.1 callers are read
// ahead and sent with the headers in one TLS record (and resent as-is on a
// retry); all other bodies stream.
//
// Inbound (callee side), on the internal port (Proxy.InternalHandler):
//
//	caller identity from the peer certificate (once per connection)
//	-> strip dapr-caller-*/dapr-callee-* headers, stamp our own
//	-> short-circuit 503 (header Meshd-Short-Circuit) if the app is unhealthy
//	-> authz.Authorizer (403 on deny) -> appchannel -> app; the answer streams back.
//
// gRPC is HTTP/2: it passes through as frames with trailers, never decoded.
// Bodies stream both ways; only the small bodies above are buffered.
//
// Errors are JSON {"errorCode": "...", "message": "..."} for HTTP callers
// (see the Err* codes) and gRPC statuses (trailers-only responses) for gRPC
// callers. The app's own status and body pass through untouched.
//
// One forward loop (forward.go) serves every outbound call: pick, attempt,
// settle (the one place an attempt's outcome is counted: the pick's Done
// for outlier detection, the target's circuit breaker) and tryAgain (the
// one try-again decision), under the target's resiliency.Set.
//
// Without a Resiliency policy a target runs under noPolicy, the built-in
// default: a call is retried on another endpoint (at most 3 attempts, each
// endpoint once) when the body was never sent and either the failure
// happened before the request reached the callee (dial or TLS handshake
// failure, or a short-circuit answer) or the method is idempotent (GET HEAD
// OPTIONS PUT DELETE TRACE). Such a target costs one atomic load and a map
// lookup, no allocation.
//
// With a policy (package proxy/resiliency, docs/resiliency.md): per-attempt
// timeout, retries by the policy (backoff, status matching, bodies up to
// 64 KiB replayed, another endpoint per retry, a retry budget) and the
// target's circuit breaker (503 ERR_CIRCUIT_OPEN while open). Every call
// honours Meshd-Timeout and grpc-timeout (deadline.go); the time left
// travels to the callee sidecar (its context deadline for the call to the
// app) and on to the app.
//
// Helper handlers: Proxy.HTTPHandler is the outbound HTTP invoke path as an
// http.Handler (the Dapr gRPC InvokeService translation calls it); set
// Proxy.DaprAPI before Serve to serve /dapr.proto.runtime.v1.Dapr/InvokeService
// on the gRPC port.
package proxy
