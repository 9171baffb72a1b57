// Package chaos is meshd's fault suite (issue #18): a load of idempotent
// GETs and non-idempotent POSTs, each carrying a unique Chaos-Id that the
// echo app records (--record), runs through a caller sidecar while a fault
// hits one instance; the suite then checks what the callers saw against
// what the apps recorded: no call lost silently, no POST delivered twice,
// every failure reported, and it measures detection, recovery and
// latency.
//
// The loopback tests (TestLoopback*) run in make test: the regression
// tests of the two defects #18 found (an app restarted behind its only,
// ejected endpoint; a hung peer sidecar). The suite across hosts
// (TestHosts*, network namespaces joined by a bridge, root only) runs with
// make chaos (MESHD_CHAOS=full for the long fault durations) and writes its
// figures as JSON (MESHD_CHAOS_OUT) for docs/reliability.md.
//
// Load is the generator; Record reads an app's record; Check compares.
package chaos
