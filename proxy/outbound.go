package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy/route"
)

const maxAttempts = 3

// smallBody bounds the request bodies of HTTP/1.1 callers that the caller
// sidecar reads ahead: sent with the headers in one TLS record (net/http
// flushes headers on their own before a streamed body) and resent as-is on
// a retry.
const smallBody = 8 << 10

// serveOutbound is the app-facing HTTP handler.
func (p *Proxy) serveOutbound(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		if _, ok := r.Header[route.HeaderAppID]; !ok && (r.RequestURI == "" || r.RequestURI[0] == '/') {
			switch r.URL.Path {
			case "/v1.0/healthz", "/v1.0/healthz/outbound":
				p.serveHealthz(w)
				return
			case "/v1.0/healthz/app":
				p.serveAppHealthz(w)
				return
			}
		}
	}
	p.invoke(w, r, false)
}

func (p *Proxy) serveHealthz(w http.ResponseWriter) {
	if p.Ready() {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeError(w, false, http.StatusServiceUnavailable, ErrCodeNotReady, "sidecar is not ready: no workload certificate yet")
}

// serveAppHealthz answers 204 while the sidecar is ready and its app is
// healthy (always, without app health checks), 503 otherwise: the endpoint
// discovery backends register as the instance's health check (Consul).
func (p *Proxy) serveAppHealthz(w http.ResponseWriter) {
	if !p.Ready() {
		p.serveHealthz(w)
		return
	}
	if p.cfg.AppHealth != nil && !p.cfg.AppHealth.Healthy() {
		writeError(w, false, http.StatusServiceUnavailable, ErrCodeAppUnhealthy, "app "+p.cfg.Identity.AppID+" is not in a healthy state")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// resultReporter is implemented by resolvers with passive outlier detection
// (discovery.Cache): status 0 is a connection broken after it was made.
type resultReporter interface {
	ReportResult(t discovery.Target, addr string, status int)
}

// targetWaiter is implemented by resolvers that resolve targets on demand
// (discovery.Cache over a Watcher backend such as consul).
type targetWaiter interface {
	WaitTarget(ctx context.Context, t discovery.Target) error
}

func (p *Proxy) reportResult(t discovery.Target, addr string, status int) {
	if rr, ok := p.cfg.Resolver.(resultReporter); ok {
		rr.ReportResult(t, addr, status)
	} else if status == 0 {
		p.cfg.Resolver.ReportFailure(t, addr)
	} else {
		p.cfg.Resolver.ReportSuccess(t, addr)
	}
}

// Ready reports whether the sidecar can make calls: it has a workload
// certificate (or runs with --insecure).
func (p *Proxy) Ready() bool {
	if p.cfg.Ready != nil {
		return p.cfg.Ready()
	}
	if p.cfg.Insecure {
		return true
	}
	_, err := p.cfg.SVIDSource.GetX509SVID()
	return err == nil
}

// invoke routes r to its target app.
func (p *Proxy) invoke(w http.ResponseWriter, r *http.Request, isGRPC bool) {
	rt, err := route.FromRequest(r, p.cfg.Identity.Namespace)
	if err != nil {
		switch {
		case errors.Is(err, route.ErrNoTarget):
			writeError(w, isGRPC, http.StatusNotFound, ErrCodeNoAppID, err.Error())
		default:
			writeError(w, isGRPC, http.StatusBadRequest, ErrCodeMalformed, err.Error())
		}
		return
	}
	p.forward(w, r, &rt, isGRPC)
}

func isIdempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete, http.MethodTrace:
		return true
	}
	return false
}

// forward sends r to a sidecar of rt.Target, retrying on another endpoint
// where that is safe, and streams the answer to w.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, rt *route.Route, isGRPC bool) {
	if p.observe {
		o := p.startOutbound(w, r, rt)
		defer p.endOutbound(o, rt.Target, isGRPC)
		w = o
	}
	if set := p.res.Load().For(rt.Target.AppID, rt.Target.Namespace); set != nil {
		p.forwardWithPolicy(w, r, rt, isGRPC, set) // resilient.go
		return
	}
	f, ok := p.startForward(w, r, rt, isGRPC)
	if !ok {
		return
	}
	if f.cancel != nil {
		defer f.cancel()
	}
	ctx, timeout, tr, hasBody := f.ctx, f.timeout, f.tr, f.hasBody
	if hasBody && r.ProtoMajor == 1 {
		// In full-duplex mode net/http does not drain an unread body when
		// the answer starts; its drain after the handler returns restarts
		// the connection's background read after aborting it, and the next
		// request on that keep-alive connection panics ("invalid concurrent
		// Body.Read call") and is reset. Errors answered before the body
		// was sent (no endpoint, refused dial) hit this: drain here, while
		// the handler still runs. A no-op once the body was read to EOF.
		defer r.Body.Close()
	}
	var small []byte // a small body read ahead: one write, resent on retry
	if r.ProtoMajor == 1 && !isGRPC {
		if hasBody && r.ContentLength > 0 && r.ContentLength <= smallBody {
			small = make([]byte, r.ContentLength)
			if _, err := io.ReadFull(r.Body, small); err != nil {
				if r.Context().Err() == nil && !p.answerBodyTimeout(w, r, isGRPC) {
					writeError(w, isGRPC, http.StatusBadRequest, ErrCodeMalformed, "proxy: read request body: "+err.Error())
				}
				return
			}
		}
	}
	idempotent := isIdempotent(r.Method)
	var (
		tried   [maxAttempts]string
		lastErr error
		lastSC  *http.Response // last short-circuit answer
	)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		ep, err := p.cfg.Resolver.Pick(rt.Target)
		if attempt == 0 && errors.Is(err, discovery.ErrUnknownTarget) {
			// First call to a target an on-demand backend has not resolved.
			if tw, ok := p.cfg.Resolver.(targetWaiter); ok && tw.WaitTarget(ctx, rt.Target) == nil {
				ep, err = p.cfg.Resolver.Pick(rt.Target)
			}
		}
		if err != nil {
			if attempt == 0 {
				writeError(w, isGRPC, http.StatusServiceUnavailable, ErrCodeNoEndpoint, err.Error())
				return
			}
			break
		}
		if seen(tried[:attempt], ep.Address) {
			break
		}
		tried[attempt] = ep.Address
		if attempt > 0 {
			p.metrics.RetryInc(rt.Target)
		}

		var body *sealableBody
		req := p.peerRequest(r, rt, ep.Address)
		switch {
		case small != nil:
			req.Body = io.NopCloser(bytes.NewReader(small))
		case hasBody:
			body = &sealableBody{r: r.Body}
			req.Body = body
		default:
			req.ContentLength = 0
		}
		if timeout > 0 {
			setDeadline(ctx, r.Header, isGRPC) // the time left, to the callee sidecar and its app
		}
		resp, err := tr.RoundTrip(req.WithContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				if lastSC != nil {
					lastSC.Body.Close()
				}
				if errors.Is(ctx.Err(), context.DeadlineExceeded) && r.Context().Err() == nil {
					writeError(w, isGRPC, http.StatusGatewayTimeout, ErrCodeTimeout, "call to "+rt.Target.String()+" timed out after "+timeout.String())
				}
				return // the caller went away
			}
			if p.answerBodyTimeout(w, r, isGRPC) {
				return // the caller's fault, not the endpoint's
			}
			lastErr = err
			var de *dialError
			beforeDelivery := errors.As(err, &de)
			if beforeDelivery {
				p.cfg.Resolver.ReportFailure(rt.Target, ep.Address) // refused: out at once
			} else {
				p.reportResult(rt.Target, ep.Address, 0) // broken after connecting: counted
			}
			if (beforeDelivery || idempotent) && (body == nil || body.seal()) {
				continue
			}
			break
		}
		if resp.Header[HeaderShortCircuit] != nil {
			p.cfg.Resolver.ReportFailure(rt.Target, ep.Address)
			if body == nil || body.seal() {
				if lastSC != nil {
					lastSC.Body.Close()
				}
				lastSC = resp
				continue
			}
			copyResponse(w, resp)
			return
		}
		p.reportResult(rt.Target, ep.Address, resp.StatusCode) // 5xx counted
		if lastSC != nil {
			lastSC.Body.Close()
		}
		copyResponse(w, resp)
		return
	}
	if lastSC != nil {
		copyResponse(w, lastSC)
		return
	}
	msg := "failed to invoke " + rt.Target.String()
	if lastErr != nil {
		msg += ": " + lastErr.Error()
	}
	writeError(w, isGRPC, http.StatusBadGateway, ErrCodeTransport, msg)
}

func seen(tried []string, addr string) bool {
	for _, a := range tried {
		if a == addr {
			return true
		}
	}
	return false
}

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

// forwardCall is what startForward prepared for one call.
type forwardCall struct {
	ctx     context.Context
	cancel  context.CancelFunc // nil without a deadline
	timeout time.Duration      // 0: none
	tr      http.RoundTripper
	hasBody bool
}

// startForward does what every forwarded call needs first, with or without a
// Resiliency policy: the call's deadline, the target's transport — HTTP/1.1
// callers ride HTTP/1.1 to the callee sidecar (see peerTransports), gRPC and
// HTTP/2 callers HTTP/2 — hop-by-hop and dapr-app-id headers removed, and
// full duplex for HTTP/1.1 uploads so the app can stream its answer while the
// upload goes on. ok is false when an error answer was written.
func (p *Proxy) startForward(w http.ResponseWriter, r *http.Request, rt *route.Route, isGRPC bool) (f forwardCall, ok bool) {
	f.ctx = r.Context()
	if f.timeout = p.callTimeout(r, isGRPC); f.timeout > 0 {
		f.ctx, f.cancel = context.WithTimeout(f.ctx, f.timeout)
	}
	pt, err := p.peers.get(rt.Target)
	if err != nil {
		if f.cancel != nil {
			f.cancel()
		}
		writeError(w, isGRPC, http.StatusBadRequest, ErrCodeMalformed, err.Error())
		return forwardCall{}, false
	}
	cleanHopByHop(r.Header)
	delete(r.Header, route.HeaderAppID)
	f.hasBody = r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	if f.hasBody && r.ProtoMajor == 1 {
		_ = http.NewResponseController(w).EnableFullDuplex()
	}
	f.tr = pt.h2
	if r.ProtoMajor == 1 && !isGRPC {
		f.tr = pt.h1
	}
	return f, true
}

// peerRequest is one attempt's request to the callee sidecar at addr: the
// caller's method, headers and length, and the one normalized path and query.
// The caller sets its body.
func (p *Proxy) peerRequest(r *http.Request, rt *route.Route, addr string) *http.Request {
	return &http.Request{
		Method:        r.Method,
		URL:           &url.URL{Scheme: p.peerScheme, Host: addr, Opaque: rt.Path, RawQuery: rt.Query},
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        r.Header,
		ContentLength: r.ContentLength,
		Host:          addr,
	}
}
