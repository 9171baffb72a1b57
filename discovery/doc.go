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
//	r, err := discovery.Build(ctx, "static", discovery.BuildOptions{ConfigFile: f, Logger: log}, cache)
//	if err != nil { ... }
//	defer r.Close()
//
// and per call:
//
//	ep, err := cache.Pick(target)   // errors.Is(err, discovery.ErrUnknownTarget / ErrNoHealthyEndpoint)
//	... call ep.Address ...
//	cache.ReportFailure(target, ep.Address)            // refused, or "app unhealthy": eject now
//	cache.ReportResult(target, ep.Address, status)     // the answer's status; 0: broken after connecting
//
// Outlier ejection (passive, in the caller): ReportFailure ejects at once;
// Options.ConsecutiveFailures (5) results of 0 or 5xx in a row eject too.
// An ejected endpoint leaves the picker for Options.BaseEjectionTime (5s),
// doubled on each further ejection up to Options.MaxEjectionTime (30s); it
// returns when its time is up, and a successful call after its return
// resets the doubling. At most Options.MaxEjectionPercent of a target's
// endpoints are out at once; by default every endpoint may be, so a fully
// failed app gives a fast ErrNoHealthyEndpoint. Counted failures eject at
// most Options.MaxOutlierEjectionPercent (50), so an app's 5xx answer to a
// repeated bad request cannot take every instance out.
//
// On-demand backends (consul) implement Watcher: Pick of an unknown target
// starts its watch and answers ErrUnknownTarget without waiting; the proxy
// then calls WaitTarget once (bounded by Options.FirstResolveTimeout) and
// picks again. After that first answer every Pick is a cache read.
package discovery
