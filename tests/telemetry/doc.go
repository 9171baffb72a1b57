// Package telemetry_test proves tracing and metrics end to end with real
// processes: sentry, two meshd sidecars, the echo app, and a real OTLP
// receiver (Jaeger v2 built from the Go module proxy by
// tests/telemetry/install-jaeger.sh, in-memory store) whose query API is
// asked for the trace. Metrics are scraped from both sidecars and parsed
// with the Prometheus text parser.
package telemetry_test
