// Package xds is meshd's control plane: it runs one discovery backend (the
// discovery builders, as a sidecar runs them) and the policy directory,
// keeps versioned resources in go-control-plane's snapshot cache, and
// serves them over ADS, state of the world and delta, on an mTLS port
// (cmd/controlplane).
//
// # Resources
//
// Per app and namespace, named ResourceName(app) = "{app}.{namespace}":
// a Cluster (EDS over ADS, round robin) and its ClusterLoadAssignment (the
// internal mTLS addresses of the app's sidecars, HEALTHY or UNHEALTHY as
// the backend says, no locality). Per namespace, a
// meshd.policy.v1.PolicySet (package discovery/xds/policypb) named after
// the namespace, and the mesh-wide one named "_mesh": the files of
// {policy-dir}/{name}/. Every resource passes its ValidateAll before it
// enters a snapshot; an app whose resources fail keeps its last good ones,
// and a policy tree that does not load with the policy package's loader is
// refused whole (the last good one is still served).
//
// # The proxyless hook
//
// Config.Hook (an AppHook) is called for every app on every change and
// may add Listeners and RouteConfigurations (proxyless gRPC's API listener
// and its routes, both named ResourceName(app)) and replace the plain
// Cluster by one of the same name (with the mesh mTLS transport socket).
// nil serves Cluster, ClusterLoadAssignment and policies only.
//
// # Who sees what
//
// Every stream's namespace comes from the client's certificate (a mesh
// SVID, checked by go-spiffe's tlsconfig against the trust bundle), never
// from the Node it sends: the server replaces the Node with one whose ID is
// that namespace, and the snapshot cache is keyed by it. A client of
// namespace N sees the apps of N, the apps of namespaces that export to N
// (Config.Exports, --export), and the PolicySets N and _mesh. Asking by
// name for anything else gets nothing; a client without a mesh SVID does
// not get past the TLS handshake.
//
// # Pushes
//
// The backend pushes into a store (a discovery.Updater) that remembers
// which apps changed; after Config.Debounce of quiet the changed apps are
// rebuilt and each namespace's snapshot is set if what it sees changed.
// Each resource's version is a hash of its encoding, so delta clients get
// exactly the resources that changed (one endpoint change: one
// ClusterLoadAssignment to the clients that subscribed to it); state of
// the world clients get every resource they asked for of the changed type.
//
// The control plane's own identity is a sentry SVID,
// spiffe://{td}/ns/meshd-system/controlplane by default, obtained and
// rotated with sentryclient and certs.Source as a sidecar's is
// (RunProcess).
package xds
