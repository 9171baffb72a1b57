// Package discovery resolves an app ID and namespace to the endpoints of its
// sidecars (their internal mTLS addresses).
//
// Backends (static, mdns, consul, kubernetes, xds) are shaped like grpc-go's
// resolvers: a Builder, registered in init() under its --resolver name,
// builds a Resolver that watches its source and pushes complete endpoint sets
// into an Updater. The Updater is the watch-fed Cache. The data plane never
// asks a backend anything on the hot path: it reads the Cache, whose
// per-target picker is immutable and rebuilt on every change, so Pick
// neither locks nor allocates.
//
// Wiring, as cmd/meshd does it:
//
//	import _ "github.com/meshd/meshd/discovery/static" // registers "static"
//
//	cache := discovery.NewCache(discovery.Options{Logger: log})
//	defer cache.Close()
//	r, err := cache.Build(ctx, "static", discovery.BuildOptions{ConfigFile: f, Logger: log})
//	if err != nil { ... }
//	defer r.Close()
//	picker := cache.Picker() // what the proxy holds
//
// and per attempt, the pick hands back its own report (grpc-go's
// PickResult.Done):
//
//	pr, err := picker.Pick(ctx, target) // errors.Is(err, discovery.ErrUnknownTarget / ErrNoHealthyEndpoint)
//	... call pr.Address ...
//	pr.Done(discovery.DoneInfo{Down: true})        // refused, or "app unhealthy": eject now
//	pr.Done(discovery.DoneInfo{Status: status})    // the answer's status; 0: broken after connecting
//
// Callers that hold an address rather than a pick (tools, tests) use
// Cache.Pick, ReportFailure and ReportResult, the same rules keyed by
// address.
//
// Outlier ejection (passive, in the caller): a Down report ejects at once;
// Options.ConsecutiveFailures (5) results of 0 or 5xx in a row eject too.
// An ejected endpoint leaves the picker for Options.BaseEjectionTime (5s),
// doubled on each further ejection up to Options.MaxEjectionTime (30s); it
// returns when its time is up, and a successful call after its return
// resets the doubling. At most Options.MaxEjectionPercent of a target's
// endpoints are out at once; by default every endpoint may be, so a fully
// failed app gives a fast ErrNoHealthyEndpoint — except for one probe per
// Options.ProbeInterval (200ms): while every endpoint a backend calls
// healthy is ejected, the Picker lets one call through to an ejected one,
// and any answer to it puts the endpoint back at once. With a Checker
// (SetChecker: the proxy's, which asks the endpoint's sidecar), each ejected
// endpoint is also checked out of band every Options.CheckInterval (500ms):
// a passing check puts it back at once, and while its checks fail it stays
// out past its ejection time. Counted failures eject at
// most Options.MaxOutlierEjectionPercent (50), so an app's 5xx answer to a
// repeated bad request cannot take every instance out.
//
// On-demand backends (consul) implement Watcher, and Cache.Build wires them
// to the Cache: the Picker's Pick of an unknown target starts its watch and
// waits for its first answer (WaitTarget: bounded by ctx and
// Options.FirstResolveTimeout); Cache.Pick starts the watch and answers
// ErrUnknownTarget without waiting. After that first answer every Pick is a
// cache read.
package discovery
