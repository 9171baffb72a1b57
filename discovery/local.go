package discovery

import "io/fs"

// LocalHealthSetter is implemented by Resolvers that register the local
// instance and can publish its app's health (mdns: the announcement's TXT
// health flag; consul: a TTL check). The sidecar calls SetLocalHealth on
// every change the app health checker sees, and once at start with the
// checker's initial state, so callers take an unhealthy instance out of
// their pickers. It must return quickly (no blocking on the network).
type LocalHealthSetter interface {
	SetLocalHealth(healthy bool)
}

// PolicyFeed is implemented by Resolvers whose source also carries the
// authorization policy (xds: the control plane's PolicySets), so that a
// sidecar needs no policy directory. The tree has the layout of a policy
// directory ({namespace}/*.rego and *.yaml, _mesh/).
type PolicyFeed interface {
	// Policies returns the policy tree received so far (nil if the source
	// carries none) and hands every later tree to apply, one at a time. An
	// error from apply rejects that tree: the backend reports it to its
	// source (an xDS NACK with the error as reason) and the tree in force
	// stays. Policies is called once, by the sidecar, after its policy
	// engine is loaded from the returned tree.
	Policies(apply func(fs.FS) error) fs.FS
}

// AllWatcher is implemented by on-demand Resolvers (Watchers) that can
// also follow every app their source knows, for a control plane that
// serves them all rather than the ones a sidecar calls. WatchAll returns at
// once; the apps are pushed as they are found, and so are apps that appear
// later. Apps that disappear stay known with no endpoints.
type AllWatcher interface {
	WatchAll()
}
