//go:build meshd_nokube

package sidecar

// This build leaves the kubernetes backend out (build tag meshd_nokube).
const withKube = false
