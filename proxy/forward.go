package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy/internal/h1"
	"github.com/meshd/meshd/proxy/internal/h2"
	"github.com/meshd/meshd/proxy/resiliency"
	"github.com/meshd/meshd/proxy/route"
)

// maxAttempts bounds the attempts of a call without a retry policy: one per
// endpoint, at most this many.
const maxAttempts = 3

// maxReplayBody bounds a request body kept so that a retry policy can
// resend it: read ahead when its Content-Length says it fits, recorded
// while it streams otherwise (gRPC). A larger body is never retried once
// sent.
const maxReplayBody = 64 << 10

// noPolicy is the resiliency of a target without a Resiliency policy, the
// built-in default: no per-attempt timeout, no circuit breaker, no retry
// budget, and the safe retry rule (a nil Retry): a call that was never
// delivered (connection refused, callee short-circuited) or an idempotent
// one broken in flight goes to another endpoint at once, each endpoint at
// most once, maxAttempts in all.
var noPolicy = &resiliency.Set{}

// resiliencyRef holds the Resiliency config in force.
type resiliencyRef = atomic.Pointer[resiliency.Config]

// SetResiliency replaces the Resiliency config (nil: none); calls in
// flight keep the one they started with.
func (p *Proxy) SetResiliency(c *resiliency.Config) { p.res.Store(c) }

// forwardCall is what startForward prepared for one call.
type forwardCall struct {
	ctx     context.Context
	cancel  context.CancelFunc // nil without a deadline
	timeout time.Duration      // 0: none
	tr      http.RoundTripper
	hasBody bool
}

// forward sends r to a sidecar of rt.Target and streams the answer to w.
// It is the one loop of every outbound call: pick an endpoint, make an
// attempt, count its outcome (settle), and decide once whether to try again
// (tryAgain), under the target's Resiliency set or, without one, noPolicy.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, rt *route.Route, isGRPC bool) {
	if p.observe {
		o := p.startOutbound(w, r, rt)
		defer p.endOutbound(o, rt.Target, isGRPC)
		w = o
	}
	set := p.res.Load().For(rt.Target.AppID, rt.Target.Namespace)
	if set == nil {
		set = noPolicy
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
	pol := set.Retry
	readAhead := int64(0)
	switch {
	case pol != nil:
		readAhead = maxReplayBody
	case !isGRPC:
		// Sent with the headers in one write (net/http flushes headers on
		// their own before a streamed body) and resent as-is on a retry:
		// a call that never reached the app (the callee short-circuited,
		// its app being down) goes to another endpoint, POSTs of HTTP/2
		// callers included (#18: they were answered 503 instead).
		readAhead = h1.DefaultInlineBody
	}
	var (
		replay   []byte // the whole body, resent by each attempt
		rec      *recordingBody
		recorded []byte // rec's bytes, read to the end: resent by later attempts
	)
	if hasBody && r.ContentLength > 0 && r.ContentLength <= readAhead {
		replay = make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, replay); err != nil {
			if r.Context().Err() == nil && !p.answerBodyTimeout(w, r, isGRPC) {
				writeError(w, isGRPC, http.StatusBadRequest, ErrCodeMalformed, "proxy: read request body: "+err.Error())
			}
			return
		}
	} else if hasBody && pol != nil && r.ContentLength < 0 {
		rec = newRecordingBody(r.Body)
	}

	idempotent := !isGRPC && resiliency.IsIdempotent(r.Method)
	rc := retryCall{ctx: ctx, set: set, target: rt.Target, maxRetries: maxAttempts - 1}
	if pol != nil {
		rc.maxRetries = pol.Retries
		rc.start = time.Now()
	}
	if set.Budget != nil {
		if rc.start.IsZero() {
			rc.start = time.Now()
		}
		set.Budget.Request(rc.start)
	}
	var (
		tried    [resiliency.MaxRetriesCap + 1]string
		lastErr  error
		lastSC   *http.Response // last short-circuit answer
		scCancel context.CancelFunc
	)
	closeSC := func() {
		if lastSC != nil {
			lastSC.Body.Close()
			scCancel()
			lastSC = nil
		}
	}
	defer closeSC()

	for attempt := 0; ; attempt++ {
		ep, err := p.pickOther(ctx, rt.Target, tried[:attempt])
		if err != nil {
			if attempt == 0 {
				// Name the app: Pick's errors are sentinels without it.
				writeError(w, isGRPC, http.StatusServiceUnavailable, ErrCodeNoEndpoint, "app "+rt.Target.String()+": "+err.Error())
				return
			}
			break
		}
		if pol == nil && seen(tried[:attempt], ep.Address) {
			break // the default rule tries each endpoint once
		}
		var gen uint64
		if set.Breaker != nil {
			if gen, err = set.Breaker.Allow(time.Now()); err != nil {
				closeSC()
				writeError(w, isGRPC, http.StatusServiceUnavailable, resiliency.ErrCodeCircuitOpen,
					"call to "+rt.Target.String()+": "+err.Error())
				return
			}
		}
		if attempt < len(tried) {
			tried[attempt] = ep.Address
		}
		if attempt > 0 {
			p.metrics.RetryInc(rt.Target)
		}

		var body *sealableBody
		req := p.peerRequest(r, rt, ep.Address)
		switch {
		case replay != nil:
			req.Body = io.NopCloser(bytes.NewReader(replay))
		case rec != nil && recorded != nil:
			req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(recorded)), int64(len(recorded))
		case rec != nil:
			req.Body = rec
		case hasBody:
			body = &sealableBody{r: r.Body}
			req.Body = body
		default:
			req.ContentLength = 0
		}
		actx, acancel := ctx, context.CancelFunc(noCancel)
		if set.Timeout > 0 {
			actx, acancel = context.WithTimeout(ctx, set.Timeout)
		}
		if timeout > 0 || set.Timeout > 0 {
			setDeadline(actx, r.Header, isGRPC) // the time left, to the callee sidecar and its app
		}
		resp, err := tr.RoundTrip(setContext(req, actx))
		// replayable reports whether this attempt's body can be sent again.
		replayable := func() bool {
			switch {
			case replay != nil:
				return true
			case rec != nil && recorded == nil:
				if rec.seal() { // never read: the next attempt streams it
					rec = newRecordingBody(r.Body)
					return true
				}
				b, ok := rec.replay()
				if ok {
					recorded = b
					if recorded == nil {
						recorded = []byte{} // an empty body, read to its end
					}
				}
				return ok
			case body != nil:
				return body.seal()
			}
			return true
		}
		if err != nil {
			attemptTimedOut := actx.Err() != nil && ctx.Err() == nil
			acancel()
			if ctx.Err() != nil {
				settle(&ep, set, gen, outcome{skip: true}, r.Context().Err() != nil) // a caller gone is no failure
				if errors.Is(ctx.Err(), context.DeadlineExceeded) && r.Context().Err() == nil {
					closeSC()
					writeError(w, isGRPC, http.StatusGatewayTimeout, ErrCodeTimeout, "call to "+rt.Target.String()+" timed out after "+timeout.String())
				}
				return // the caller went away
			}
			if p.answerBodyTimeout(w, r, isGRPC) { // the caller's fault, not the endpoint's
				settle(&ep, set, gen, outcome{skip: true}, true)
				closeSC()
				return
			}
			lastErr = err
			var de *dialError
			// A stream the callee refused (GOAWAY, REFUSED_STREAM) was
			// not processed either: it may go to another endpoint.
			delivered := !errors.As(err, &de) && !errors.Is(err, h2.ErrStreamRefused)
			// Refused, or the peer stopped answering (keepalive): out at
			// once. Broken after connecting: counted, unless the attempt's
			// own timeout broke it.
			down := de != nil || peerLost(err)
			settle(&ep, set, gen, outcome{down: down, skip: !down && attemptTimedOut}, false)
			if (!delivered || (idempotent && (pol != nil || !attemptTimedOut))) && replayable() && rc.tryAgain(p, attempt, delivered) {
				continue
			}
			if attemptTimedOut {
				closeSC()
				writeError(w, isGRPC, http.StatusGatewayTimeout, ErrCodeTimeout, "call to "+rt.Target.String()+" timed out after "+set.Timeout.String())
				return
			}
			break
		}
		if resp.Header[HeaderShortCircuit] != nil {
			// The callee's app is unhealthy: the endpoint goes out at once.
			settle(&ep, set, gen, outcome{down: true}, false)
			if replayable() && rc.tryAgain(p, attempt, false) {
				closeSC()
				lastSC, scCancel = resp, acancel
				continue
			}
			closeSC()
			copyResponse(w, resp)
			acancel()
			return
		}
		var failed, again bool
		if code := trailersOnlyGRPCStatus(resp.Header); isGRPC && code >= 0 {
			failed, again = pol.FailedGRPC(code), pol.MayRetryGRPC(code)
		} else {
			failed, again = pol.FailedHTTP(resp.StatusCode), pol.MayRetryHTTP(resp.StatusCode, idempotent)
			if resp.StatusCode == http.StatusBadGateway && idempotent && resp.Header[HeaderAppFailed] != nil {
				// The callee's app broke the call before answering: an
				// idempotent call goes elsewhere, as on a broken peer
				// connection (never a POST: the app may have it).
				failed, again = true, true
			}
		}
		settle(&ep, set, gen, outcome{status: resp.StatusCode}, !failed) // 5xx counted
		if again && replayable() && rc.tryAgain(p, attempt, true) {
			discard(resp)
			acancel()
			continue
		}
		closeSC()
		copyResponse(w, resp)
		acancel()
		return
	}
	if lastSC != nil {
		resp, cancel := lastSC, scCancel
		lastSC = nil
		copyResponse(w, resp)
		cancel()
		return
	}
	msg := "failed to invoke " + rt.Target.String()
	if lastErr != nil {
		msg += ": " + lastErr.Error()
	}
	writeError(w, isGRPC, http.StatusBadGateway, ErrCodeTransport, msg)
}

// outcome is what one attempt tells discovery about its endpoint.
type outcome struct {
	skip   bool // nothing: the attempt says nothing about the endpoint
	down   bool // bad beyond doubt (refused, short-circuited): out at once
	status int  // the answer's HTTP status; 0: the connection broke after it was made
}

// settle is the one place an attempt's outcome is counted: to discovery
// through the pick's own report (passive outlier detection) and to the
// target's circuit breaker, for which ok says whether the attempt was a
// success.
func settle(pr *discovery.PickResult, set *resiliency.Set, gen uint64, o outcome, ok bool) {
	if !o.skip && pr.Done != nil {
		pr.Done(discovery.DoneInfo{Down: o.down, Status: o.status})
	}
	if set.Breaker != nil {
		set.Breaker.Done(gen, ok, time.Now())
	}
}

// retryCall is what the try-again decision needs of a call.
type retryCall struct {
	ctx        context.Context
	set        *resiliency.Set
	target     discovery.Target
	maxRetries int
	start      time.Time // zero without a retry policy or budget
}

// tryAgain is the one try-again decision: whether to make attempt number
// attempt+1 after a failure, waiting its backoff first. A call that was
// never delivered goes to another endpoint at once; the default rule (no
// retry policy) does not consult the retry budget for it.
func (rc *retryCall) tryAgain(p *Proxy, attempt int, delivered bool) bool {
	if attempt >= rc.maxRetries {
		return false
	}
	pol := rc.set.Retry
	if !delivered && pol == nil {
		return true // the default rule: one try per endpoint, bounded by maxAttempts
	}
	now := time.Now()
	var wait time.Duration
	if pol != nil && delivered {
		wait = pol.Backoff(attempt + 1)
		if pol.MaxElapsedTime > 0 && now.Add(wait).Sub(rc.start) > pol.MaxElapsedTime {
			return false
		}
		if dl, ok := rc.ctx.Deadline(); ok && now.Add(wait).After(dl) {
			return false
		}
	}
	if !rc.set.Budget.TryRetry(now) {
		p.log.Debug("proxy: retry budget spent", "target", rc.target.String())
		return false
	}
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-rc.ctx.Done():
			return false
		}
	}
	return true
}

// startForward does what every forwarded call needs first: the call's
// deadline, the target's transport — HTTP/1.1 callers ride HTTP/1.1 to the
// callee sidecar (see peerTransports), gRPC and HTTP/2 callers HTTP/2 —
// hop-by-hop and dapr-app-id headers removed, and full duplex for HTTP/1.1
// uploads so the app can stream its answer while the upload goes on. ok is
// false when an error answer was written.
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
	delete(r.Header, HeaderAPIToken) // a credential for this sidecar only
	delete(r.Header, HeaderCheck)    // only a sidecar checks a peer
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
	req := newOutRequest(url.URL{Scheme: p.peerScheme, Host: addr, Opaque: rt.Path, RawQuery: rt.Query})
	req.Method, req.Proto, req.ProtoMajor = r.Method, "HTTP/2.0", 2
	req.Header, req.ContentLength, req.Host = r.Header, r.ContentLength, addr
	return req
}

// pickOther picks an endpoint of t not in tried when there is one (a few
// picks of the round robin), else one already tried. A pick of a target an
// on-demand backend has not resolved yet waits for it (bounded by ctx).
func (p *Proxy) pickOther(ctx context.Context, t discovery.Target, tried []string) (discovery.PickResult, error) {
	pr, err := p.cfg.Resolver.Pick(ctx, t)
	for i := 0; err == nil && i < 4 && seen(tried, pr.Address); i++ {
		var next discovery.PickResult
		if next, err = p.cfg.Resolver.Pick(ctx, t); err == nil {
			pr = next
		}
	}
	return pr, err
}

func seen(tried []string, addr string) bool {
	for _, a := range tried {
		if a == addr {
			return true
		}
	}
	return false
}

// trailersOnlyGRPCStatus reads the status of a trailers-only gRPC answer
// (-1: none).
func trailersOnlyGRPCStatus(h http.Header) int {
	if v := h["Grpc-Status"]; len(v) == 1 {
		return parseGRPCCode(v[0])
	}
	return -1
}

// discard drains a little of an answer that will not be forwarded, so its
// connection can be reused, and closes it.
func discard(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 16<<10)
	resp.Body.Close()
}
