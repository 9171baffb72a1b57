// Package tracing gives the sidecar its two spans per call with the
// OpenTelemetry SDK: one for the outbound hop (caller sidecar, kind client)
// and one for the inbound hop (callee sidecar, kind server). Context travels
// as W3C traceparent/tracestate headers; gRPC metadata are HTTP/2 headers,
// so gRPC calls carry the same keys.
//
// Spans are exported over OTLP (gRPC or HTTP) by a batching processor.
// Setup reads the Dapr Configuration spec.tracing (see config/daprconfig)
// and the standard OTEL_EXPORTER_OTLP_* variables; with no exporter
// configured it returns a nil *Tracer, and the proxy skips tracing with one
// nil check per call. Sampling is ParentBased(TraceIDRatioBased(rate)): a
// caller's sampled flag is honoured, root spans are sampled at rate (Dapr's
// default 0.0001).
//
// The traceparent parser and formatter are our own (allocation-free
// parsing straight from the header map, fuzzed). Sampled calls get SDK
// spans; unsampled ones skip the SDK entirely (the sampler's decision is
// known before a span exists) and only pass on a traceparent with a new
// span ID.
package tracing
