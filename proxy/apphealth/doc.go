// Package apphealth probes the local app and tells the data plane whether it
// is healthy (--enable-app-health-check and friends, daprd semantics).
//
//   - The app starts unhealthy; one successful probe makes it healthy.
//   - After Threshold consecutive failed probes it is unhealthy; the inbound
//     server then short-circuits calls (503, never queued).
//   - Probes run every Interval whether healthy or not, each bounded by Timeout.
//
// HTTP apps (http, https, h2c): GET {Path}; any 2xx is healthy.
// gRPC apps (grpc, grpcs): grpc.health.v1.Health/Check with service "";
// SERVING is healthy. An app that does not implement the health service
// (Unimplemented) is judged by whether a TCP connection to it succeeds.
//
// OnChange registers callbacks run on every transition, e.g. to tell a
// discovery backend that carries health.
package apphealth
