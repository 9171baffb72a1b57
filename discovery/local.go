package discovery

// LocalHealthSetter is implemented by Resolvers that register the local
// instance and can publish its app's health (mdns: the announcement's TXT
// health flag; consul: a TTL check). The sidecar calls SetLocalHealth on
// every change the app health checker sees, and once at start with the
// checker's initial state, so callers take an unhealthy instance out of
// their pickers. It must return quickly (no blocking on the network).
type LocalHealthSetter interface {
	SetLocalHealth(healthy bool)
}
