package proxy

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/meshd/meshd/proxy/resiliency"
)

// Deadlines of a call, both sides: the caller sidecar bounds a call by the
// smallest of its Timeout, Meshd-Timeout and grpc-timeout (callTimeout) and
// tells the callee sidecar the time left (setDeadline); the callee bounds
// the call to its app by it (inboundDeadline).

// callTimeout is the deadline of a whole call: the smallest of the
// sidecar's Timeout, the Meshd-Timeout header and, for gRPC, grpc-timeout.
func (p *Proxy) callTimeout(r *http.Request, isGRPC bool) time.Duration {
	timeout := p.cfg.Timeout
	if d, ok := resiliency.ParseTimeout(r.Header[resiliency.HeaderTimeout]); ok && (timeout == 0 || d < timeout) {
		timeout = d
	}
	if isGRPC {
		if d, ok := parseGRPCTimeout(r.Header["Grpc-Timeout"]); ok && (timeout == 0 || d < timeout) {
			timeout = d
		}
	}
	return timeout
}

// setDeadline tells the callee sidecar (and through it the app) the time
// left before ctx's deadline.
func setDeadline(ctx context.Context, h http.Header, isGRPC bool) {
	dl, ok := ctx.Deadline()
	if !ok {
		return
	}
	left := time.Until(dl)
	h[resiliency.HeaderTimeout] = []string{resiliency.FormatTimeout(left)}
	if isGRPC {
		h["Grpc-Timeout"] = []string{resiliency.FormatGRPCTimeout(left)}
	}
}

// inboundDeadline is the callee side of deadline propagation: the caller
// sidecar's Meshd-Timeout (the time left of the call) bounds the call to
// the app. The header goes on to the app unchanged.
func inboundDeadline(r *http.Request) (context.Context, context.CancelFunc) {
	if d, ok := resiliency.ParseTimeout(r.Header[resiliency.HeaderTimeout]); ok {
		return context.WithTimeout(r.Context(), d)
	}
	return r.Context(), noCancel
}

func noCancel() {}

// parseGRPCTimeout parses a grpc-timeout header value ("100m", "5S").
func parseGRPCTimeout(v []string) (time.Duration, bool) {
	if len(v) != 1 || len(v[0]) < 2 || len(v[0]) > 9 {
		return 0, false
	}
	s := v[0]
	n, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	return time.Duration(n) * unit, true
}
