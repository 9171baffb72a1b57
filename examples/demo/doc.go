// Command demo runs a small local meshd mesh and checks every answer it
// gets: sentry with a fresh CA, sample apps with their sidecars over the
// static resolver, calls in every app-facing form, caller identity proved
// by certificates, round-robin load spread, an instance failing and
// recovering, and the refusals of the mTLS port.
//
// It prints one line per step (✓ or ✗), stops every process it started
// (also on Ctrl-C or failure) and exits 0 only if every step gave the
// expected answer. DEMO_KEEP=1 leaves the mesh running until Ctrl-C and
// prints how to call it.
//
// Usage (from the repository root, after make build and building
// examples/apps/echo and examples/apps/grpcecho into bin/):
//
//	go run ./examples/demo [--bin bin]
//
// make demo does all of that.
package main
