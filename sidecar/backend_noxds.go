//go:build meshd_noxds

package sidecar

// This build leaves the xds backend out (build tag meshd_noxds).
const withXDS = false
