package xds

import "github.com/meshd/meshd/discovery"

// BuildApp is buildApp, for the tests.
var BuildApp = func(app discovery.Target, eps []Endpoint, hook AppHook) (*appResources, error) {
	return buildApp(app, eps, hook)
}
