package proxy

import (
	"context"
	"net/http"
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
		if v := r.Header["Grpc-Timeout"]; len(v) == 1 {
			if d, ok := resiliency.ParseGRPCTimeout(v[0]); ok && (timeout == 0 || d < timeout) {
				timeout = d
			}
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

// deadlinePassed reports whether ctx's deadline is behind us, also before
// ctx's timer has run: a gRPC app resets the stream when its copy of the
// same deadline passes (RST_STREAM CANCEL), and on a busy sidecar that
// reset may be read before the timer fires. The call then failed by its
// deadline, not by the app.
func deadlinePassed(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}
