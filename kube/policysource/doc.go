// Package policysource reads meshd's policies from Kubernetes: ConfigMaps
// labelled meshd.io/policy hold a namespace's policy files, in that
// namespace, so the namespace's owners edit them under Kubernetes RBAC
// (edit rights in a namespace include its ConfigMaps) and nobody without
// rights there can. ConfigMaps in meshd's own namespace hold the mesh-wide
// rules (_mesh).
//
// Each key of such a ConfigMap ending in .rego, .yaml or .yml is one policy
// file (Rego package mesh.authz, or a Dapr accessControl document), as in
// a --policy-dir: {namespace}/{configmap}.{key}. ConfigMaps were chosen
// over a CRD because they need no cluster-wide install step and their RBAC
// is already per namespace.
//
// The Controller watches them and keeps a policy directory (Options.Dir)
// in step, swapped atomically the way the kubelet updates a ConfigMap
// volume (a ..data symlink), so anything that follows a --policy-dir — the
// control plane, which pushes it over xDS, or a sidecar — takes each change
// within its debounce. A changed ConfigMap is compiled with the rest of the
// policies in force first: a broken one is reported on the ConfigMap itself
// (a Warning Event, reason PolicyRejected, naming key:line and the reason)
// and its last good content stays in force (none, if it never had one); an
// accepted change gets a Normal Event, reason PolicyAccepted.
//
// RBAC: list and watch configmaps; create events.
package policysource
