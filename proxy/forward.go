package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy/resiliency"
	"github.com/meshd/meshd/proxy/route"
)

// maxReplayBody bounds a request body kept so that a retry policy can
// resend it: read ahead when its Content-Length says it fits, recorded
// while it streams otherwise (gRPC). A larger body is never retried once
// sent.
const maxReplayBody = 64 << 10

// SetResiliency replaces the Resiliency config (nil: none); calls in
// flight keep the one they started with.
func (p *Proxy) SetResiliency(c *resiliency.Config) { p.res.Store(c) }

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

// grpcStatus reads the status of a trailers-only gRPC answer (-1: none).
func grpcStatus(h http.Header) int {
	v := h["Grpc-Status"]
	if len(v) != 1 || len(v[0]) == 0 || len(v[0]) > 2 {
		return -1
	}
	n, err := strconv.Atoi(v[0])
	if err != nil {
		return -1
	}
	return n
}

// recordingBody keeps what the transport reads of a streamed body, up to
// maxReplayBody, so that the body can be resent once it was read to its end.
// Like sealableBody, an attempt that never read it can hand the body on.
type recordingBody struct {
	sealableBody
	mu   sync.Mutex
	buf  []byte
	over bool
	eof  bool
}

func newRecordingBody(r io.Reader) *recordingBody {
	return &recordingBody{sealableBody: sealableBody{r: r}}
}

func (b *recordingBody) Read(p []byte) (int, error) {
	n, err := b.sealableBody.Read(p)
	if err == errSealed {
		return n, err
	}
	b.mu.Lock()
	if !b.over {
		if len(b.buf)+n > maxReplayBody {
			b.over, b.buf = true, nil
		} else {
			b.buf = append(b.buf, p[:n]...)
		}
	}
	if err == io.EOF {
		b.eof = true
	}
	b.mu.Unlock()
	return n, err
}

// replay returns the whole body once it was read to its end and fits.
func (b *recordingBody) replay() ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf, b.eof && !b.over
}

// discard drains a little of an answer that will not be forwarded, so its
// connection can be reused, and closes it.
func discard(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 16<<10)
	resp.Body.Close()
}

// forwardWithPolicy is forward for a target with a Resiliency policy: a
// per-attempt timeout, retries by the policy (or the safe default), the
// target's circuit breaker and retry budget.
func (p *Proxy) forwardWithPolicy(w http.ResponseWriter, r *http.Request, rt *route.Route, isGRPC bool, set *resiliency.Set) {
	f, ok := p.startForward(w, r, rt, isGRPC)
	if !ok {
		return
	}
	if f.cancel != nil {
		defer f.cancel()
	}
	ctx, timeout, tr, hasBody := f.ctx, f.timeout, f.tr, f.hasBody
	if hasBody && r.ProtoMajor == 1 {
		defer r.Body.Close() // see forward
	}
	pol := set.Retry
	readAhead := int64(0)
	switch {
	case pol != nil:
		readAhead = maxReplayBody
	case r.ProtoMajor == 1 && !isGRPC:
		readAhead = smallBody
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
	maxRetries := maxAttempts - 1 // the safe default: calls not delivered, on other endpoints
	if pol != nil {
		maxRetries = pol.Retries
	}
	start := time.Now()
	set.Budget.Request(start)
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
	// retry decides whether to make attempt number attempt+1 after a
	// failure, waiting its backoff first (no wait for a call that was never
	// delivered: it goes to another endpoint at once).
	retry := func(attempt int, delivered bool) bool {
		if attempt >= maxRetries {
			return false
		}
		if !delivered && pol == nil {
			return true // the default rule: one try per endpoint, bounded by maxAttempts
		}
		now := time.Now()
		var wait time.Duration
		if pol != nil && delivered {
			wait = pol.Backoff(attempt + 1)
			if pol.MaxElapsedTime > 0 && now.Add(wait).Sub(start) > pol.MaxElapsedTime {
				return false
			}
			if dl, ok := ctx.Deadline(); ok && now.Add(wait).After(dl) {
				return false
			}
		}
		if !set.Budget.TryRetry(now) {
			p.log.Debug("proxy: retry budget spent", "target", rt.Target.String())
			return false
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return false
			}
		}
		return true
	}

	for attempt := 0; ; attempt++ {
		ep, err := p.pickOther(ctx, rt.Target, tried[:attempt], attempt == 0)
		if err != nil {
			if attempt == 0 {
				writeError(w, isGRPC, http.StatusServiceUnavailable, ErrCodeNoEndpoint, err.Error())
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
		actx, acancel := ctx, context.CancelFunc(func() {})
		if set.Timeout > 0 {
			actx, acancel = context.WithTimeout(ctx, set.Timeout)
		}
		setDeadline(actx, r.Header, isGRPC)
		resp, err := tr.RoundTrip(req.WithContext(actx))
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
				if set.Breaker != nil {
					set.Breaker.Done(gen, r.Context().Err() != nil, time.Now()) // a caller gone is no failure
				}
				if errors.Is(ctx.Err(), context.DeadlineExceeded) && r.Context().Err() == nil {
					closeSC()
					writeError(w, isGRPC, http.StatusGatewayTimeout, ErrCodeTimeout, "call to "+rt.Target.String()+" timed out after "+timeout.String())
				}
				return
			}
			if p.answerBodyTimeout(w, r, isGRPC) { // the caller's fault, not the endpoint's
				if set.Breaker != nil {
					set.Breaker.Done(gen, true, time.Now())
				}
				closeSC()
				return
			}
			if set.Breaker != nil {
				set.Breaker.Done(gen, false, time.Now())
			}
			lastErr = err
			var de *dialError
			delivered := !errors.As(err, &de)
			switch {
			case !delivered:
				p.cfg.Resolver.ReportFailure(rt.Target, ep.Address) // refused: out at once
			case !attemptTimedOut:
				p.reportResult(rt.Target, ep.Address, 0) // broken after connecting: counted
			}
			if (!delivered || (idempotent && (pol != nil || !attemptTimedOut))) && replayable() && retry(attempt, delivered) {
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
			p.cfg.Resolver.ReportFailure(rt.Target, ep.Address)
			if set.Breaker != nil {
				set.Breaker.Done(gen, false, time.Now())
			}
			if replayable() && retry(attempt, false) {
				closeSC()
				lastSC, scCancel = resp, acancel
				continue
			}
			closeSC()
			copyResponse(w, resp)
			acancel()
			return
		}
		p.reportResult(rt.Target, ep.Address, resp.StatusCode) // 5xx counted
		var failed, again bool
		if code := grpcStatus(resp.Header); isGRPC && code >= 0 {
			failed, again = pol.FailedGRPC(code), pol.MayRetryGRPC(code)
		} else {
			failed, again = pol.FailedHTTP(resp.StatusCode), pol.MayRetryHTTP(resp.StatusCode, idempotent)
		}
		if set.Breaker != nil {
			set.Breaker.Done(gen, !failed, time.Now())
		}
		if again && replayable() && retry(attempt, true) {
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

// pickOther picks an endpoint of t not in tried when there is one (a few
// picks of the round robin), else one already tried.
func (p *Proxy) pickOther(ctx context.Context, t discovery.Target, tried []string, first bool) (discovery.Endpoint, error) {
	ep, err := p.cfg.Resolver.Pick(t)
	if first && errors.Is(err, discovery.ErrUnknownTarget) {
		if tw, ok := p.cfg.Resolver.(targetWaiter); ok && tw.WaitTarget(ctx, t) == nil {
			ep, err = p.cfg.Resolver.Pick(t)
		}
	}
	for i := 0; err == nil && i < 4 && seen(tried, ep.Address); i++ {
		var next discovery.Endpoint
		if next, err = p.cfg.Resolver.Pick(t); err == nil {
			ep = next
		}
	}
	return ep, err
}

// resiliencyRef holds the Resiliency config in force.
type resiliencyRef = atomic.Pointer[resiliency.Config]

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
