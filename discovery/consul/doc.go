// Package consul is the "consul" discovery backend: it resolves app IDs
// through a Consul agent and, with selfRegister, registers the local sidecar
// there.
//
// Resolution is on demand and watch-fed: the first Pick of a target starts
// one goroutine for it (the Resolver is a discovery.Watcher) that runs
// blocking queries on /v1/health/service/{app}?passing and pushes the
// complete set of passing instances in the target's namespace into the
// Cache on every change. Calls never wait for Consul; only the very first
// call to a target waits (bounded) for the first answer. When the agent is
// unreachable the Cache keeps serving the last set (logged once per outage)
// while the watches retry with backoff; they resume when it is back. A
// target without calls for watchIdleTimeout loses its watch and leaves the
// Cache (the Cache tells which targets were called: discovery.UsageTaker).
// At most maxWatches blocking queries are open at once, each holding one
// agent connection (agents accept 200 per client address by default);
// targets called beyond that are polled every PollInterval.
//
// Registration: service name = app ID, ID meshd-{app}-{namespace}-{host}-{port},
// address and port of the sidecar's internal (mTLS) port, the port also in
// Meta[daprPortMetaKey] (DAPR_PORT, as Dapr does) and the namespace in
// Meta["namespace"]. The default check is an HTTP check every second on the
// sidecar's /v1.0/healthz/app, which fails while the sidecar is not ready or
// its app is unhealthy, and when the sidecar is gone. A background loop
// watches the registration (hash-blocking /v1/agent/service/{id}) and
// registers again when the agent lost it (a restarted -dev agent). Close
// deregisters (selfDeregister).
//
// The configuration file takes the fields of Dapr's consul name resolution
// component (see Parse).
package consul
