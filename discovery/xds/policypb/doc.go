// Package policypb holds the xDS resource type of meshd's policies,
// meshd.policy.v1.PolicySet (policy.proto; the generated policy.pb.go is
// committed). The control plane (package xds) serves one PolicySet per
// namespace plus the mesh-wide "_mesh" set; the sidecar's xds resolver
// (package discovery/xds) hands them to the policy engine.
//
// Regenerate with `go generate ./discovery/xds/policypb` (protoc and
// protoc-gen-go on PATH).
package policypb

//go:generate protoc --go_out=. --go_opt=paths=source_relative policy.proto

// TypeURL is the xDS type URL of PolicySet.
const TypeURL = "type.googleapis.com/meshd.policy.v1.PolicySet"

// MeshName is the name of the mesh-wide PolicySet.
const MeshName = "_mesh"
