package tracing

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkresource "go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshd/meshd/certs"
)

// Attribute keys of the hop spans.
const (
	AttrSourceAppID      = "meshd.source.app_id"
	AttrSourceNamespace  = "meshd.source.namespace"
	AttrDestAppID        = "meshd.destination.app_id"
	AttrDestNamespace    = "meshd.destination.namespace"
	AttrMethod           = "meshd.method" // the invoked method (normalized path, no query)
	AttrPeerSPIFFEID     = "meshd.peer.spiffe_id"
	AttrHTTPMethod       = "http.request.method"
	AttrHTTPStatus       = "http.response.status_code"
	AttrGRPCStatus       = "rpc.grpc.status_code"
	spanNameOutbound     = "CallRemote"
	spanNameInboundShort = "CallLocal"
)

// Options configures New.
type Options struct {
	// Identity is this sidecar's (service.name is its app ID,
	// service.namespace its namespace).
	Identity certs.Identity
	// SamplingRate of root spans, in [0, 1]; a caller's decision wins.
	SamplingRate float64
	// Exporter receives the finished spans (batched). Required.
	Exporter sdktrace.SpanExporter
	// Sync exports every span as it ends instead of batching (tests).
	Sync bool
}

// Tracer starts the sidecar's hop spans. A nil *Tracer is valid and inert:
// the proxy checks for nil before calling.
type Tracer struct {
	tp        *sdktrace.TracerProvider
	tracer    trace.Tracer
	self      certs.Identity
	inName    string
	clientOpt []trace.SpanStartOption
	serverOpt []trace.SpanStartOption
	// rate and bound mirror TraceIDRatioBased, so that unsampled calls
	// skip the SDK (see start).
	rate  float64
	bound uint64
}

// New builds a Tracer around an exporter.
func New(opts Options) (*Tracer, error) {
	if opts.Exporter == nil {
		return nil, errors.New("tracing: an Exporter is required")
	}
	if !(opts.SamplingRate >= 0 && opts.SamplingRate <= 1) {
		return nil, fmt.Errorf("tracing: sampling rate %v: want a number between 0 and 1", opts.SamplingRate)
	}
	res := sdkresource.NewSchemaless(
		attribute.String("service.name", opts.Identity.AppID),
		attribute.String("service.namespace", opts.Identity.Namespace),
		attribute.String("service.instance.id", opts.Identity.String()),
	)
	// Only the processor in use is made: a batch processor starts a
	// goroutine that only its Shutdown ends.
	var proc sdktrace.SpanProcessor
	if opts.Sync {
		proc = sdktrace.NewSimpleSpanProcessor(opts.Exporter)
	} else {
		proc = sdktrace.NewBatchSpanProcessor(opts.Exporter)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(opts.SamplingRate))),
		sdktrace.WithSpanProcessor(proc),
		sdktrace.WithResource(res),
		sdktrace.WithIDGenerator(idGenerator{}),
	)
	return &Tracer{
		tp:        tp,
		tracer:    tp.Tracer("github.com/meshd/meshd/proxy"),
		self:      opts.Identity,
		inName:    spanNameInboundShort + "/" + opts.Identity.AppID,
		clientOpt: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)},
		serverOpt: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)},
		rate:      opts.SamplingRate,
		bound:     uint64(opts.SamplingRate * (1 << 63)),
	}, nil
}

// NewPropagator returns a Tracer that exports nothing and only propagates
// W3C trace context: a call that arrives with a valid traceparent passes it
// on unchanged (with its tracestate), a call without one gets a new trace
// (not sampled), so that every answer names its trace whether or not
// tracing is configured, as daprd's do. It starts no SDK span and costs
// one allocation for a new trace, none for a propagated one.
func NewPropagator(id certs.Identity) *Tracer {
	return &Tracer{self: id}
}

// ErrorTraceparent is the traceparent of an answer the sidecar gives
// without forwarding the call (a refused token, a malformed target): the
// caller's own when valid, else a new unsampled one. No span is started.
// A nil Tracer gives nil.
func (t *Tracer) ErrorTraceparent(h http.Header) []string {
	if t == nil {
		return nil
	}
	if v := h[HeaderTraceparent]; len(v) == 1 {
		if _, _, _, ok := ParseTraceparent(v[0]); ok {
			return v
		}
	}
	return newTraceparent(newTraceID(), newSpanID(), 0)
}

// Exporting reports whether the Tracer records and exports spans (false
// for a nil Tracer and a NewPropagator one).
func (t *Tracer) Exporting() bool { return t != nil && t.tp != nil }

// Shutdown flushes the spans not yet exported and stops the exporter.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil || t.tp == nil {
		return nil
	}
	if err := t.tp.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: shutdown: %w", err)
	}
	return nil
}

// ForceFlush exports the finished spans now.
func (t *Tracer) ForceFlush(ctx context.Context) error {
	if t == nil || t.tp == nil {
		return nil
	}
	return t.tp.ForceFlush(ctx)
}

// Hop is the span of one hop through the sidecar. The zero Hop is inert.
type Hop struct {
	span trace.Span
	kind trace.SpanKind
	// Traceparent names this hop's span: it was put in the forwarded
	// request's headers and belongs in the response to the caller. The
	// slice is shared: never modify it.
	Traceparent []string
}

// Outbound starts the client span of a call to dst and rewrites the
// traceparent/tracestate of h (the headers forwarded to the callee
// sidecar) to name it. The caller's traceparent in h, if valid, is the
// parent.
func (t *Tracer) Outbound(h http.Header, dstApp, dstNS, method, path string) Hop {
	span, tp := t.start(h, spanNameOutbound, t.clientOpt)
	if span != nil && span.IsRecording() {
		span.SetName(spanNameOutbound + "/" + dstApp)
		span.SetAttributes(
			attribute.String(AttrSourceAppID, t.self.AppID),
			attribute.String(AttrSourceNamespace, t.self.Namespace),
			attribute.String(AttrDestAppID, dstApp),
			attribute.String(AttrDestNamespace, dstNS),
			attribute.String(AttrHTTPMethod, method),
			attribute.String(AttrMethod, path),
			// The client's TLS config accepts exactly this ID from the callee.
			attribute.String(AttrPeerSPIFFEID, "spiffe://"+t.self.TrustDomain.Name()+"/ns/"+dstNS+"/"+dstApp),
		)
	}
	return Hop{span: span, kind: trace.SpanKindClient, Traceparent: tp}
}

// Inbound starts the server span of a call and rewrites the
// traceparent/tracestate of h (the headers forwarded to the app) to name
// it. The caller is added by SetCaller once its certificate proved it.
func (t *Tracer) Inbound(h http.Header, method, path string) Hop {
	span, tp := t.start(h, t.inName, t.serverOpt)
	if span != nil && span.IsRecording() {
		span.SetAttributes(
			attribute.String(AttrDestAppID, t.self.AppID),
			attribute.String(AttrDestNamespace, t.self.Namespace),
			attribute.String(AttrHTTPMethod, method),
			attribute.String(AttrMethod, path),
		)
	}
	return Hop{span: span, kind: trace.SpanKindServer, Traceparent: tp}
}

// SetCaller records the caller of an inbound hop: the identity its
// certificate proved.
func (h Hop) SetCaller(caller certs.Identity) {
	if h.span == nil || !h.span.IsRecording() || caller.AppID == "" {
		return
	}
	h.span.SetAttributes(
		attribute.String(AttrSourceAppID, caller.AppID),
		attribute.String(AttrSourceNamespace, caller.Namespace),
		attribute.String(AttrPeerSPIFFEID, caller.String()),
	)
}

// start starts a span whose parent is the traceparent in h and puts its
// own traceparent in h. Calls the sampler would drop skip the SDK: the
// decision of ParentBased(TraceIDRatioBased) is known before a span
// exists (a remote parent's flag, or the ratio test on a new trace ID),
// and an unsampled hop only needs a new span ID in the traceparent it
// passes on (tracestate goes through untouched). Only sampled calls pay
// for an SDK span.
func (t *Tracer) start(h http.Header, name string, opts []trace.SpanStartOption) (trace.Span, []string) {
	var tid trace.TraceID
	var psid trace.SpanID
	var flags trace.TraceFlags
	parent := false
	v := h[HeaderTraceparent]
	if len(v) == 1 {
		tid, psid, flags, parent = ParseTraceparent(v[0])
	}
	if t.tp == nil { // NewPropagator: pass a valid trace context on as it is
		if parent {
			return nil, v
		}
		delete(h, HeaderTracestate)
		tp := newTraceparent(newTraceID(), newSpanID(), 0)
		h[HeaderTraceparent] = tp
		return nil, tp
	}
	if !parent {
		delete(h, HeaderTracestate) // no valid traceparent: tracestate is void
		tid = newTraceID()
		if !t.ratioSampled(tid) {
			tp := newTraceparent(tid, newSpanID(), 0)
			h[HeaderTraceparent] = tp
			return nil, tp
		}
		// A sampled root: the SDK must use the trace ID sampled above.
		_, span := t.tracer.Start(context.WithValue(context.Background(), presetTraceID{}, tid), name, opts...)
		return span, t.inject(h, span)
	}
	if !flags.IsSampled() {
		tp := newTraceparent(tid, newSpanID(), 0)
		h[HeaderTraceparent] = tp
		return nil, tp
	}
	cfg := trace.SpanContextConfig{TraceID: tid, SpanID: psid, TraceFlags: trace.FlagsSampled, Remote: true}
	if ts := h[HeaderTracestate]; len(ts) > 0 {
		s := ts[0]
		if len(ts) > 1 {
			s = strings.Join(ts, ",")
		}
		if st, err := trace.ParseTraceState(s); err == nil {
			cfg.TraceState = st
		}
	}
	_, span := t.tracer.Start(trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(cfg)), name, opts...)
	return span, t.inject(h, span)
}

func (t *Tracer) inject(h http.Header, span trace.Span) []string {
	sc := span.SpanContext()
	tp := []string{FormatTraceparent(sc)}
	h[HeaderTraceparent] = tp
	if ts := sc.TraceState(); ts.Len() > 0 {
		h[HeaderTracestate] = []string{ts.String()}
	} else {
		delete(h, HeaderTracestate)
	}
	return tp
}

// ratioSampled is TraceIDRatioBased's decision for a new trace.
func (t *Tracer) ratioSampled(tid trace.TraceID) bool {
	switch {
	case t.rate >= 1:
		return true
	case t.rate <= 0:
		return false
	}
	return binary.BigEndian.Uint64(tid[8:16])>>1 < t.bound
}

// End records the outcome and ends the span. status is the HTTP status
// answered; grpcCode is the gRPC status code of a gRPC call, -1 otherwise.
func (h Hop) End(status, grpcCode int) {
	if h.span == nil {
		return
	}
	if h.span.IsRecording() {
		h.span.SetAttributes(attribute.Int(AttrHTTPStatus, status))
		failed := status >= 500 || (h.kind == trace.SpanKindClient && status >= 400)
		if grpcCode >= 0 {
			h.span.SetAttributes(attribute.Int(AttrGRPCStatus, grpcCode))
			// Server errors of gRPC (semantic conventions): the codes that
			// mean the call could not be served.
			switch grpcCode {
			case 2, 4, 12, 13, 14, 15:
				failed = true
			case 0:
			default:
				failed = failed || h.kind == trace.SpanKindClient
			}
		}
		if failed {
			h.span.SetStatus(codes.Error, "status "+strconv.Itoa(status))
		}
	}
	h.span.End()
}

// SpanContext is the span's context (for tests and logs).
func (h Hop) SpanContext() trace.SpanContext {
	if h.span == nil {
		return trace.SpanContext{}
	}
	return h.span.SpanContext()
}

// logger returns l or the default.
func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.Default()
	}
	return l
}
