//go:build meshdcreds

package main

// Built with -tags meshdcreds, the client checks the control plane's exact
// SPIFFE ID: the bootstrap's "meshd_spiffe" channel credentials become
// known to grpc-go, and it takes them before "tls".
import _ "github.com/meshd/meshd/xds/grpccreds"
