// Package sidecar assembles a meshd sidecar from its configuration: the
// workload identity (sentry client + rotating certs.Source), discovery
// (registry backend feeding a discovery.Cache), the app channel and its
// health checker, the proxy servers, the Dapr gRPC API and the SPIFFE
// Workload API. cmd/meshd is a thin flag parser around Run.
package sidecar
