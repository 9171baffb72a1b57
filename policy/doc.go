// Package policy authorizes inbound calls: it loads a policy directory
// ({dir}/{namespace}/*.rego and *.yaml, {dir}/_mesh/ for mesh-wide rules)
// and an optional Dapr Configuration (--config), compiles everything once
// per load into an immutable Snapshot, and decides each call against the
// destination namespace's policy. Engine implements policy/authz.Authorizer.
//
// Decision: mesh-wide rules first; any deny (a Rego deny reason or an
// accessControl deny) wins; otherwise the call is allowed if some rule
// allowed it (Rego allow, or an accessControl allow); a namespace with no
// policy at all gets the configured default; anything else is denied.
//
// Rego policies use Rego v1, package mesh.authz, a boolean rule allow and a
// set rule deny of reason strings; the input document is described in
// docs/policy.md. Rego queries are prepared once per load; inputs are built
// as ast values directly, and only the parts the policies read (headers and
// query are skipped unless referenced).
//
// Each Rego set is also compiled to a Go matcher at load time (compile.go)
// when the compiler understands every rule of it; the matcher then decides
// the calls with the verdict and reasons OPA would give (a differential test
// and a fuzz target hold it to that), without an input document or an
// allocation. A set with any other shape stays with OPA, which is also what
// Explain uses, with its trace.
//
// Engine.Watch reloads on file changes (fsnotify, debounced): the new set is
// compiled and checked before it replaces the old one; a bad file is
// reported with file:line:reason, counted (ReloadFailures), and the last good
// set stays in force.
package policy
