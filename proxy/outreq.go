package proxy

import (
	"context"
	"net/http"
	"net/url"
)

// outRequest is a request the sidecar sends on (to the callee sidecar, to
// the app) with its URL: one allocation for both.
type outRequest struct {
	req http.Request
	u   url.URL
}

// newOutRequest returns the request of a new outRequest, its URL u.
func newOutRequest(u url.URL) *http.Request {
	o := &outRequest{u: u}
	o.req.URL = &o.u
	return &o.req
}

// setContext sets req's context in place: WithContext is inlined and its
// copy does not escape, so this does not allocate where WithContext would.
// Only for a request nobody else holds yet.
func setContext(req *http.Request, ctx context.Context) *http.Request {
	*req = *req.WithContext(ctx)
	return req
}
