//go:build !meshd_noxds

package sidecar

import _ "github.com/meshd/meshd/discovery/xds" // --resolver xds

const withXDS = true
