// Package lifecycle runs the long-lived parts of a meshd process (a
// sidecar, sentry) as components, each Run(ctx) error, under one group:
// the first component that fails stops the others and its error ends the
// process (SPIRE's RunTasks pattern). Teardown that must follow the stop
// (flush spans, close caches) is a Stack, run in the reverse order of
// construction, so there is one ordered shutdown on every path: a failed
// start, a failed component, and a normal stop.
//
//	var st lifecycle.Stack
//	defer st.Close()
//	cache := discovery.NewCache(...)
//	st.Push(func() { cache.Close() })
//	return lifecycle.Run(ctx,
//		lifecycle.Func(func(ctx context.Context) error { return mets.Serve(ctx, l, log) }),
//		lifecycle.Func(func(ctx context.Context) error { return p.Serve(ctx, ls, grace) }))
package lifecycle
