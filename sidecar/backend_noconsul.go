//go:build meshd_noconsul

package sidecar

// This build leaves the consul backend out (build tag meshd_noconsul).
const withConsul = false
