// Package authz is the authorization hook of the inbound call path: after
// the caller's identity is proven and before the call reaches the app, the
// sidecar asks an Authorizer whether the call may proceed.
//
// The policy engine (OPA, Dapr accessControl) adapts itself to Authorizer;
// this package holds only the contract, so the data plane does not depend on
// any engine.
package authz

import (
	"context"
	"net/http"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/discovery"
)

// Protocols of a Request.
const (
	ProtocolHTTP = "http"
	ProtocolGRPC = "grpc"
)

// Request is what an Authorizer decides on. It is passed by value; the
// Header map is the live request header: read it, never modify it.
type Request struct {
	// Caller is the identity proven by the caller's certificate. Zero when
	// mTLS is off (--insecure).
	Caller certs.Identity
	// Destination is this sidecar's app.
	Destination discovery.Target
	// Protocol is ProtocolHTTP or ProtocolGRPC.
	Protocol string
	// Method is the HTTP verb ("POST" for gRPC).
	Method string
	// Path is the one normalized method path (see proxy/route), exactly the
	// string the app receives, e.g. "/orders/42" or "/pkg.Service/Method".
	Path string
	// Query is the raw query string.
	Query string
	// Header holds the request headers, including the stamped
	// dapr-caller-app-id, dapr-caller-namespace and dapr-callee-app-id.
	Header http.Header
}

// Decision is an Authorizer's answer.
type Decision struct {
	Allow bool
	// Reason explains a denial; it is sent to the caller in the 403 body.
	Reason string
}

// Authorizer decides whether a call may reach the app. It is called once
// per call on the hot path and must be safe for concurrent use.
type Authorizer interface {
	Authorize(ctx context.Context, req Request) Decision
}

// Func adapts a function to Authorizer.
type Func func(ctx context.Context, req Request) Decision

// Authorize calls f.
func (f Func) Authorize(ctx context.Context, req Request) Decision { return f(ctx, req) }
