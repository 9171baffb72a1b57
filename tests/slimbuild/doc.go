// Package slimbuild proves meshd's slim builds (docs/performance.md, "Slim
// builds"): each build tag that leaves a discovery backend out
// (meshd_nokube, meshd_noconsul, meshd_noxds, and all three at once) still
// builds, and the sidecar it builds gets an identity from sentry and carries
// a call between two sidecars; a --resolver the build left out fails the
// start with one clear error naming the tag.
package slimbuild
