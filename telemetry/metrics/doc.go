// Package metrics is the sidecar's Prometheus metrics, served at /metrics
// on --metrics-port with the prefix meshd_ (see docs/observability.md for
// the list).
//
// Label values are bounded: no paths or methods become labels; a peer app
// becomes a label value only when it came from discovery (outbound: a
// target the discovery cache announced; inbound: the app ID of the
// caller's certificate), at most Options.MaxApps of them, and every other
// value is "unknown". A target name typed by a caller that does not
// resolve never creates a series.
//
// The per-call path (Outbound, Inbound) looks up pre-resolved series in an
// immutable map behind an atomic pointer: no lock and no allocation once a
// series exists. Counters kept by other packages (policy decisions and
// reloads, certificate expiry and rotations, discovery endpoints) are read
// at scrape time by collectors. All methods are safe on a nil *Metrics (no
// metrics), so callers need no checks.
package metrics
