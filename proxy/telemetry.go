package proxy

import (
	"net/http"
	"sync"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy/route"
	"github.com/meshd/meshd/telemetry/tracing"
)

// statusClientGone is the status recorded for a call whose caller went
// away before an answer was written (nginx's 499).
const statusClientGone = 499

// obsWriter records the status of an answer for metrics and tracing and
// puts the hop's traceparent in the response headers. Pooled: the
// per-call path does not allocate for it.
type obsWriter struct {
	http.ResponseWriter
	status int
	start  time.Time
	hop    tracing.Hop
	caller discovery.Target
}

var obsPool = sync.Pool{New: func() any { return new(obsWriter) }}

func (o *obsWriter) WriteHeader(code int) {
	if o.status == 0 && code >= 200 {
		o.status = code
		if o.hop.Traceparent != nil {
			o.ResponseWriter.Header()[tracing.HeaderTraceparent] = o.hop.Traceparent
		}
	}
	o.ResponseWriter.WriteHeader(code)
}

func (o *obsWriter) Write(b []byte) (int, error) {
	if o.status == 0 {
		o.WriteHeader(http.StatusOK)
	}
	return o.ResponseWriter.Write(b)
}

func (o *obsWriter) Flush() {
	if f, ok := o.ResponseWriter.(http.Flusher); ok {
		if o.status == 0 {
			o.WriteHeader(http.StatusOK)
		}
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the server's writer.
func (o *obsWriter) Unwrap() http.ResponseWriter { return o.ResponseWriter }

// startOutbound begins observing an outbound call: the client span (its
// traceparent replaces the caller's in r.Header, which forward sends on)
// and the start time.
func (p *Proxy) startOutbound(w http.ResponseWriter, r *http.Request, rt *route.Route) *obsWriter {
	o := obsPool.Get().(*obsWriter)
	o.ResponseWriter, o.start = w, time.Now()
	if p.tracer != nil {
		o.hop = p.tracer.Outbound(r.Header, rt.Target.AppID, rt.Target.Namespace, r.Method, rt.Path)
	}
	return o
}

func (p *Proxy) endOutbound(o *obsWriter, t discovery.Target, isGRPC bool) {
	status, code := o.result(isGRPC)
	o.hop.End(status, code)
	if isGRPC {
		p.metrics.Outbound(t, true, code, time.Since(o.start))
	} else {
		p.metrics.Outbound(t, false, status, time.Since(o.start))
	}
	*o = obsWriter{}
	obsPool.Put(o)
}

// startInbound begins observing an inbound call: the server span (its
// traceparent replaces the caller sidecar's in r.Header, which goes to the
// app) and the start time. The caller is set once the certificate proved
// it (setCaller).
func (p *Proxy) startInbound(w http.ResponseWriter, r *http.Request) *obsWriter {
	o := obsPool.Get().(*obsWriter)
	o.ResponseWriter, o.start = w, time.Now()
	if p.tracer != nil {
		o.hop = p.tracer.Inbound(r.Header, r.Method, r.URL.Path)
	}
	return o
}

func (o *obsWriter) setCaller(id certs.Identity) {
	o.caller = discovery.Target{AppID: id.AppID, Namespace: id.Namespace}
	o.hop.SetCaller(id)
}

func (p *Proxy) endInbound(o *obsWriter, isGRPC bool) {
	status, code := o.result(isGRPC)
	o.hop.End(status, code)
	if isGRPC {
		p.metrics.Inbound(o.caller, true, code, time.Since(o.start))
	} else {
		p.metrics.Inbound(o.caller, false, status, time.Since(o.start))
	}
	*o = obsWriter{}
	obsPool.Put(o)
}

// result is the HTTP status answered and, for gRPC, the gRPC status code
// (from the trailers-only header or the trailer; -1 when none was sent).
func (o *obsWriter) result(isGRPC bool) (status, code int) {
	status, code = o.status, -1
	if status == 0 {
		status = statusClientGone
	}
	if isGRPC {
		h := o.ResponseWriter.Header()
		v, ok := h["Grpc-Status"]
		if !ok {
			v = h[http.TrailerPrefix+"Grpc-Status"]
		}
		if len(v) == 1 {
			code = parseGRPCCode(v[0])
		}
	}
	return status, code
}

func parseGRPCCode(s string) int {
	switch len(s) {
	case 1:
		if s[0] >= '0' && s[0] <= '9' {
			return int(s[0] - '0')
		}
	case 2:
		if s[0] == '1' && s[1] >= '0' && s[1] <= '6' {
			return 10 + int(s[1]-'0')
		}
	}
	return -1
}
