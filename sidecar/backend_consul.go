//go:build !meshd_noconsul

package sidecar

import _ "github.com/meshd/meshd/discovery/consul" // --resolver consul

const withConsul = true
