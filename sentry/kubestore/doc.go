// Package kubestore shares sentry's CA between replicas through a
// Kubernetes Secret (--ca-store kubernetes).
//
// The Secret holds the CA's persisted state exactly as a data directory
// does (state.json and every generation's root and issuer, see
// ca.Authority.Snapshot); each replica keeps its data directory as a
// working copy. At start a replica takes the Secret's CA if there is one;
// the first replica creates it (Create is atomic: a replica that loses the
// race takes the winner's CA before it signs anything).
//
// One replica leads (client-go leader election on a Lease named like the
// Secret). Only the leader advances the root rotation's three persisted
// steps (publish, switch, retire) and imports a staged rotation: one staged
// in the Secret (`sentry rotate-root --ca-secret`, keys staged__*), which
// it moves into its data directory and removes from the Secret, or one
// staged in its own data directory. After every change it writes the new
// state to the Secret (an Update carrying the resourceVersion it read); a
// leader that finds a state in the Secret it has not seen (a previous
// leader wrote after it) takes it instead of overwriting it. Followers
// read the Secret every SyncInterval and restore a changed state, so every
// replica publishes the same bundle versions and signs with the same
// issuer; the rotation's propagation delay covers their lag. A follower
// that takes over restores the Secret before it acts.
//
// The leader also publishes the trust bundle as ConfigMap
// {BundleConfigMap} (key ca.crt) in every namespace that has a pod
// annotated with an app ID (meshd.io/app-id or dapr.io/app-id), when the
// bundle changes and every ResyncInterval (new namespaces).
//
// RBAC, in sentry's namespace: get, create, update on secrets and
// leases (coordination.k8s.io); cluster-wide: list pods, get, create,
// update on configmaps. Store.CheckAccess names what is missing.
package kubestore
