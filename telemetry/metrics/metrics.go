package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshd/meshd/discovery"
)

// Unknown is the label value of an app that is not known to discovery (or
// past the MaxApps bound), and of a status outside the known range.
const Unknown = "unknown"

// DefaultMaxApps bounds the distinct peer apps per direction.
const DefaultMaxApps = 512

// DefaultLatencyBuckets are Dapr's default latencyDistributionBuckets (ms).
var DefaultLatencyBuckets = []time.Duration{
	1 * time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond, 4 * time.Millisecond, 5 * time.Millisecond,
	6 * time.Millisecond, 8 * time.Millisecond, 10 * time.Millisecond, 13 * time.Millisecond, 16 * time.Millisecond,
	20 * time.Millisecond, 25 * time.Millisecond, 30 * time.Millisecond, 40 * time.Millisecond, 50 * time.Millisecond,
	65 * time.Millisecond, 80 * time.Millisecond, 100 * time.Millisecond, 130 * time.Millisecond, 160 * time.Millisecond,
	200 * time.Millisecond, 250 * time.Millisecond, 300 * time.Millisecond, 400 * time.Millisecond, 500 * time.Millisecond,
	650 * time.Millisecond, 800 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second,
	10 * time.Second, 20 * time.Second, 50 * time.Second, 100 * time.Second,
}

// BreakerState is the value of meshd_circuit_breaker_state.
type BreakerState int

// Circuit breaker states.
const (
	BreakerClosed   BreakerState = 0
	BreakerHalfOpen BreakerState = 1
	BreakerOpen     BreakerState = 2
)

// Options configures New.
type Options struct {
	// Self is this sidecar's app (source of sent calls, destination of
	// received ones).
	Self discovery.Target
	// LatencyBuckets of the latency histograms; nil: DefaultLatencyBuckets.
	LatencyBuckets []time.Duration
	// MaxApps bounds the distinct peer apps per direction (default
	// DefaultMaxApps); more become "unknown".
	MaxApps int
}

// Metrics holds the sidecar's metrics. A nil *Metrics is valid: every
// method is then a no-op.
type Metrics struct {
	reg     *prometheus.Registry
	self    discovery.Target
	maxApps int

	sent, recv       *prometheus.CounterVec
	sentDur, recvDur *prometheus.HistogramVec
	retries          *prometheus.CounterVec
	breaker          *prometheus.GaugeVec
	ejections        *prometheus.CounterVec
	discoveryErrors  prometheus.Counter

	// known are the targets discovery announced (copy on write).
	known atomic.Pointer[map[discovery.Target]struct{}]
	out   atomic.Pointer[map[seriesKey]*series]
	in    atomic.Pointer[map[seriesKey]*series]
	// per-target children of retries and breaker (copy on write).
	peer atomic.Pointer[map[discovery.Target]*peerSeries]

	mu               sync.Mutex // serializes copy-on-write updates
	outApps, inApps  map[discovery.Target]struct{}
	unknownTarget    discovery.Target
	unsubscribeCache func()
}

type seriesKey struct {
	t    discovery.Target
	grpc bool
	code int
}

type series struct {
	count prometheus.Counter
	dur   prometheus.Observer
}

type peerSeries struct {
	retries prometheus.Counter
	breaker prometheus.Gauge
}

var peerLabels = []string{"src_app_id", "src_namespace", "dst_app_id", "dst_namespace", "protocol", "status"}

// New registers the metrics (and the Go runtime and process collectors)
// in a new registry.
func New(opts Options) (*Metrics, error) {
	if opts.Self.AppID == "" || opts.Self.Namespace == "" {
		return nil, errors.New("metrics: Options.Self needs an app ID and a namespace")
	}
	if opts.MaxApps <= 0 {
		opts.MaxApps = DefaultMaxApps
	}
	buckets := make([]float64, 0, len(opts.LatencyBuckets))
	for _, d := range opts.LatencyBuckets {
		buckets = append(buckets, d.Seconds())
	}
	if len(buckets) == 0 {
		for _, d := range DefaultLatencyBuckets {
			buckets = append(buckets, d.Seconds())
		}
	}
	for i := 1; i < len(buckets); i++ {
		if buckets[i] <= buckets[i-1] {
			return nil, fmt.Errorf("metrics: latency buckets must increase (%v after %v)", buckets[i], buckets[i-1])
		}
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(), self: opts.Self, maxApps: opts.MaxApps,
		outApps: map[discovery.Target]struct{}{}, inApps: map[discovery.Target]struct{}{},
		unknownTarget: discovery.Target{AppID: Unknown, Namespace: Unknown},
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshd_requests_sent_total",
			Help: "Calls this sidecar sent to other apps, by destination app and answered status (HTTP status code, or gRPC status code for protocol=grpc)."}, peerLabels),
		recv: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshd_requests_received_total",
			Help: "Calls this sidecar received for its app, by calling app (from its certificate) and answered status."}, peerLabels),
		sentDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "meshd_request_sent_duration_seconds",
			Help: "Time from receiving an outbound call from the app to the end of the answer, retries included.", Buckets: buckets}, peerLabels[:5]),
		recvDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "meshd_request_received_duration_seconds",
			Help: "Time from receiving an inbound call to the end of the app's answer (policy check included).", Buckets: buckets}, peerLabels[:5]),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshd_retries_total",
			Help: "Retried attempts of outbound calls, by destination app."}, []string{"dst_app_id", "dst_namespace"}),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meshd_circuit_breaker_state",
			Help: "Circuit breaker state per destination app: 0 closed, 1 half-open, 2 open."}, []string{"dst_app_id", "dst_namespace"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshd_endpoint_ejections_total",
			Help: "Endpoints taken out of load balancing by outlier detection, by app."}, []string{"app_id", "namespace"}),
		discoveryErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshd_discovery_errors_total",
			Help: "Times the discovery backend could not refresh its state (a bad file, a lost watch, an API server that is down); the last known endpoints stay in use."}),
	}
	m.known.Store(&map[discovery.Target]struct{}{})
	m.out.Store(&map[seriesKey]*series{})
	m.in.Store(&map[seriesKey]*series{})
	m.peer.Store(&map[discovery.Target]*peerSeries{})
	for _, c := range []prometheus.Collector{m.sent, m.recv, m.sentDur, m.recvDur, m.retries, m.breaker, m.ejections, m.discoveryErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := m.reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	return m, nil
}

// Registry is the registry the metrics live in (tests, extra collectors).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Outbound counts one call sent to t, answered with status (an HTTP
// status code; for gRPC calls the gRPC status code), that took d.
func (m *Metrics) Outbound(t discovery.Target, grpc bool, status int, d time.Duration) {
	if m == nil {
		return
	}
	s := (*m.out.Load())[seriesKey{t, grpc, status}]
	if s == nil {
		s = m.outSeries(t, grpc, status)
	}
	s.count.Inc()
	s.dur.Observe(d.Seconds())
}

// Inbound counts one call received from caller (the app and namespace of
// its certificate; zero with --insecure), answered with status, that took
// d.
func (m *Metrics) Inbound(caller discovery.Target, grpc bool, status int, d time.Duration) {
	if m == nil {
		return
	}
	s := (*m.in.Load())[seriesKey{caller, grpc, status}]
	if s == nil {
		s = m.inSeries(caller, grpc, status)
	}
	s.count.Inc()
	s.dur.Observe(d.Seconds())
}

// RetryInc counts one retried attempt of a call to t.
func (m *Metrics) RetryInc(t discovery.Target) {
	if m == nil {
		return
	}
	m.peerSeries(t).retries.Inc()
}

// SetBreakerState records the circuit breaker state of calls to t.
func (m *Metrics) SetBreakerState(t discovery.Target, s BreakerState) {
	if m == nil {
		return
	}
	m.peerSeries(t).breaker.Set(float64(s))
}

func (m *Metrics) isKnown(t discovery.Target) bool {
	_, ok := (*m.known.Load())[t]
	return ok
}

// label maps a status to its bounded label value.
func statusLabel(grpc bool, code int) string {
	if grpc {
		if code >= 0 && code <= 16 {
			return grpcCodes[code]
		}
		return Unknown
	}
	if code >= 100 && code <= 599 {
		return httpCodes[code-100]
	}
	return Unknown
}

var (
	grpcCodes [17]string
	httpCodes [500]string
)

func init() {
	for i := range grpcCodes {
		grpcCodes[i] = strconv.Itoa(i)
	}
	for i := range httpCodes {
		httpCodes[i] = strconv.Itoa(i + 100)
	}
}

func protoLabel(grpc bool) string {
	if grpc {
		return "grpc"
	}
	return "http"
}

// boundedStatus folds out-of-range codes into one key.
func boundedStatus(grpc bool, code int) int {
	if (grpc && (code < 0 || code > 16)) || (!grpc && (code < 100 || code > 599)) {
		return -1
	}
	return code
}

func (m *Metrics) outSeries(t discovery.Target, grpc bool, code int) *series {
	code = boundedStatus(grpc, code)
	if !m.isKnown(t) {
		t = m.unknownTarget
	}
	if s := (*m.out.Load())[seriesKey{t, grpc, code}]; s != nil {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.outApps[t]; !ok && t != m.unknownTarget {
		if len(m.outApps) >= m.maxApps {
			t = m.unknownTarget
		} else {
			m.outApps[t] = struct{}{}
		}
	}
	return m.addSeries(&m.out, seriesKey{t, grpc, code}, m.sent, m.sentDur, m.self, t)
}

func (m *Metrics) inSeries(caller discovery.Target, grpc bool, code int) *series {
	code = boundedStatus(grpc, code)
	if caller.AppID == "" || caller.Namespace == "" {
		caller = m.unknownTarget
	}
	if s := (*m.in.Load())[seriesKey{caller, grpc, code}]; s != nil {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.inApps[caller]; !ok && caller != m.unknownTarget {
		if len(m.inApps) >= m.maxApps {
			caller = m.unknownTarget
		} else {
			m.inApps[caller] = struct{}{}
		}
	}
	return m.addSeries(&m.in, seriesKey{caller, grpc, code}, m.recv, m.recvDur, caller, m.self)
}

// addSeries returns the series of k, creating it (copy on write). Called
// with m.mu held.
func (m *Metrics) addSeries(p *atomic.Pointer[map[seriesKey]*series], k seriesKey, c *prometheus.CounterVec, h *prometheus.HistogramVec, src, dst discovery.Target) *series {
	old := *p.Load()
	if s := old[k]; s != nil {
		return s
	}
	proto := protoLabel(k.grpc)
	s := &series{
		count: c.WithLabelValues(src.AppID, src.Namespace, dst.AppID, dst.Namespace, proto, statusLabel(k.grpc, k.code)),
		dur:   h.WithLabelValues(src.AppID, src.Namespace, dst.AppID, dst.Namespace, proto),
	}
	nm := make(map[seriesKey]*series, len(old)+1)
	for kk, v := range old {
		nm[kk] = v
	}
	nm[k] = s
	p.Store(&nm)
	return s
}

func (m *Metrics) peerSeries(t discovery.Target) *peerSeries {
	if ps := (*m.peer.Load())[t]; ps != nil {
		return ps
	}
	if !m.isKnown(t) {
		t = m.unknownTarget
		if ps := (*m.peer.Load())[t]; ps != nil {
			return ps
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.peer.Load()
	if ps := old[t]; ps != nil {
		return ps
	}
	if len(old) >= m.maxApps {
		t = m.unknownTarget
		if ps := old[t]; ps != nil {
			return ps
		}
	}
	ps := &peerSeries{
		retries: m.retries.WithLabelValues(t.AppID, t.Namespace),
		breaker: m.breaker.WithLabelValues(t.AppID, t.Namespace),
	}
	nm := make(map[discovery.Target]*peerSeries, len(old)+1)
	for k, v := range old {
		nm[k] = v
	}
	nm[t] = ps
	m.peer.Store(&nm)
	return ps
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: nil})
}

// Serve serves /metrics, and the mounts, on l until ctx is done.
func (m *Metrics) Serve(ctx context.Context, l net.Listener, log *slog.Logger, mounts ...Mount) error {
	if log == nil {
		log = slog.Default()
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	for _, mt := range mounts {
		mux.Handle(mt.Pattern, mt.Handler)
	}
	s := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(l) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = s.Shutdown(sctx)
		return nil
	case err := <-errc:
		return fmt.Errorf("metrics: serve %s: %w", l.Addr(), err)
	}
}
