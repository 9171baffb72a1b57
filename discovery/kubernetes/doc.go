// Package kubernetes is the "kubernetes" discovery backend: it resolves app
// IDs from discovery.k8s.io/v1 EndpointSlices, through client-go informers
// (watch plus a local resync; no polling).
//
// An app is a headless Service per app ID and namespace, labelled
// meshd.io/app-id=<app ID> (Config.AppIDLabel; dapr.io/app-id is accepted
// by configuration) and carrying the sidecar's internal (mTLS) port under
// the name meshd-internal (Config.PortName; Dapr's is dapr-internal). The
// backend does not care who made the Service or its slices: Kubernetes
// copies a Service's labels to the EndpointSlices it makes, and the
// backend reads only slices, selected by the label.
//
// Endpoint conditions map to the Cache: ready (and not terminating) is in
// the set and healthy; serving && terminating is kept in the set but
// marked unhealthy (discovery.Updater.SetHealth), so it gets no new calls
// while the ones it has finish; anything else is out. Every change of a
// slice recomputes its app from the informer's store and pushes the
// app's complete set; a (re)list pushes the whole state at once
// (ReplaceAll). Pick stays a lock-free read of the Cache.
//
// Namespaces: `app.ns` resolves in ns, a bare `app` in the sidecar's own
// namespace (the proxy does that). The sidecar's own namespace and
// Config.Namespaces are watched from the start, each by one shared
// informer (cache.SharedIndexInformer: list, then watch, plus a local
// resync); a call into another namespace starts
// its watch on first use (the Resolver is a discovery.Watcher), at most
// Config.MaxWatches at once. With Config.ClusterWide one informer watches
// every namespace. The informers are cache.SharedIndexInformers on a
// small REST client of the three API groups used (client.go), not taken
// from informers.SharedInformerFactory: the factory needs the whole
// clientset, and client-go's typed clients register every built-in API
// group; with them meshd weighed 121 MB (factory) or 92 MB (typed
// clients) instead of 70 MB (57 MB without this backend), for no
// behaviour of their own here (each informer has one consumer). Within a
// watched namespace a called app that no slice
// names is kept known with no endpoints, so its calls fail fast.
//
// Errors: at start (Build), a missing or unreadable kubeconfig, a server
// that refuses our credentials (401) or our RBAC (the verbs missing on
// endpointslices are named, from a SelfSubjectAccessReview), or that does
// not answer, is an error. After start, when the API server becomes
// unreachable the Cache keeps serving the last known endpoints; the
// resolver logs it once per outage, reports it (Updater.ReportError), and
// probes the server with a short backoff (250 ms to 2 s): when it answers,
// the watches are restarted (a relist, pushed whole), instead of waiting
// for the informers' own backoff, which grows to 30-60 s.
package kubernetes
