// Package sidecar assembles a meshd sidecar from its configuration: the
// workload identity (sentry client + rotating certs.Source), discovery
// (registry backend feeding a discovery.Cache), the app channel and its
// health checker, the proxy servers, the Dapr gRPC API and the SPIFFE
// Workload API. cmd/meshd is a thin flag parser around Run.
//
// Run builds the parts in order (parts.go), then runs those that run as
// components of one lifecycle.Run: the first that fails stops the sidecar.
// Teardown is one lifecycle.Stack, run in reverse order of construction
// after a failed start and after a stop alike.
package sidecar
