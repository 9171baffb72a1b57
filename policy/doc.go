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
// Engine.Watch reloads on file changes (fsnotify, debounced): the new set is
// compiled and checked before it replaces the old one; a bad file is
// reported with file:line:reason, counted (ReloadFailures), and the last good
// set stays in force.
package policy
