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
//	cache.ReportFailure(target, ep.Address) // refused, reset, or "app unhealthy"
//	cache.ReportSuccess(target, ep.Address)
//
// Outlier ejection: a reported failure takes the endpoint out of the picker
// for Options.BaseEjectionTime (5s), doubled on each further ejection up to
// Options.MaxEjectionTime (30s); a successful call after its return resets
// the doubling. By default every endpoint of a target may be ejected, so a
// fully failed app gives a fast ErrNoHealthyEndpoint (see
// Options.MaxEjectionPercent).
package discovery
