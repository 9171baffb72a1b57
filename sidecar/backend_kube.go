//go:build !meshd_nokube

package sidecar

import _ "github.com/meshd/meshd/discovery/kubernetes" // --resolver kubernetes

const withKube = true
