package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshd/meshd/discovery"
)

// Decisions is what the policy decision log counts (decisionlog.Logger).
type Decisions interface {
	Counts() (allows, denies, audits uint64)
}

// Reloads is what the policy engine counts (policy.Engine).
type Reloads interface {
	Reloads() uint64
	ReloadFailures() uint64
}

// RegoEngines is what a policy engine that compiles Rego also reports
// (policy.Engine): how many Rego sets of the policy in force are decided by
// Rego compiled to Go, and how many OPA evaluates.
type RegoEngines interface {
	RegoNamespaces() (compiled, opa uint64)
}

// Certs is the rotating workload certificate (certs.Source).
type Certs interface {
	NotAfter() time.Time
	Rotations() uint64
}

// Discovery is the discovery cache (discovery.Cache).
type Discovery interface {
	Targets() []discovery.Target
	Endpoints(t discovery.Target) []discovery.Endpoint
	Ready(t discovery.Target) []discovery.Endpoint
	Subscribe(fn func(discovery.Event)) (unsubscribe func())
}

// WatchPolicy exposes the policy counters, read at scrape time:
// meshd_policy_decisions_total{decision="allow|deny|audit"},
// meshd_policy_reloads_total and meshd_policy_reload_failures_total; and,
// when r is also a RegoEngines, meshd_policy_rego_namespaces{engine=
// "compiled|opa"}. Either argument may be nil.
func (m *Metrics) WatchPolicy(d Decisions, r Reloads) error {
	if m == nil {
		return nil
	}
	if d != nil {
		for i, name := range []string{"allow", "deny", "audit"} {
			i := i
			c := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshd_policy_decisions_total",
				Help:        "Policy decisions on inbound calls (audit: allowed in audit mode, enforcing would deny).",
				ConstLabels: prometheus.Labels{"decision": name}}, func() float64 {
				a, dn, au := d.Counts()
				return float64([3]uint64{a, dn, au}[i])
			})
			if err := m.reg.Register(c); err != nil {
				return err
			}
		}
	}
	if r != nil {
		for _, c := range []prometheus.Collector{
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshd_policy_reloads_total",
				Help: "Successful policy reloads after the first load."}, func() float64 { return float64(r.Reloads()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshd_policy_reload_failures_total",
				Help: "Rejected policy reloads (the last good policy stayed in force)."}, func() float64 { return float64(r.ReloadFailures()) }),
		} {
			if err := m.reg.Register(c); err != nil {
				return err
			}
		}
	}
	if re, ok := r.(RegoEngines); ok {
		for i, name := range []string{"compiled", "opa"} {
			g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshd_policy_rego_namespaces",
				Help:        "Rego sets of the policy in force (one per namespace with Rego, and the mesh-wide one) by the engine that decides calls: compiled to Go, or OPA.",
				ConstLabels: prometheus.Labels{"engine": name}}, func() float64 {
				c, o := re.RegoNamespaces()
				return float64([2]uint64{c, o}[i])
			})
			if err := m.reg.Register(g); err != nil {
				return err
			}
		}
	}
	return nil
}

// WatchCerts exposes meshd_cert_expiry_timestamp_seconds and
// meshd_cert_rotations_total, read at scrape time.
func (m *Metrics) WatchCerts(c Certs) error {
	if m == nil || c == nil {
		return nil
	}
	for _, col := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshd_cert_expiry_timestamp_seconds",
			Help: "Expiry (Unix time) of the current workload certificate."}, func() float64 {
			na := c.NotAfter()
			if na.IsZero() {
				return 0
			}
			return float64(na.UnixNano()) / 1e9
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshd_cert_rotations_total",
			Help: "Workload certificate renewals after the first."}, func() float64 { return float64(c.Rotations()) }),
	} {
		if err := m.reg.Register(col); err != nil {
			return err
		}
	}
	return nil
}

// WatchDiscovery makes the targets of d known (so that they may become
// label values), counts ejections and backend errors
// (meshd_discovery_errors_total), and exposes meshd_discovery_endpoints
// and meshd_discovery_endpoints_ready per app, read at scrape time. It
// returns a function that stops watching.
func (m *Metrics) WatchDiscovery(d Discovery) (stop func(), err error) {
	if m == nil || d == nil {
		return func() {}, nil
	}
	if err := m.reg.Register(&discoveryCollector{d: d}); err != nil {
		return nil, err
	}
	unsub := d.Subscribe(func(ev discovery.Event) {
		switch ev.Kind {
		case discovery.EventUpdated:
			m.setKnown(ev.Target, true)
		case discovery.EventRemoved:
			m.setKnown(ev.Target, false)
		case discovery.EventEjected:
			if m.isKnown(ev.Target) {
				m.ejections.WithLabelValues(ev.Target.AppID, ev.Target.Namespace).Inc()
			} else {
				m.ejections.WithLabelValues(Unknown, Unknown).Inc()
			}
		case discovery.EventError:
			m.discoveryErrors.Inc()
		}
	})
	for _, t := range d.Targets() {
		m.setKnown(t, true)
	}
	return unsub, nil
}

// MarkKnown makes t a target whose app ID may become a label value (for
// resolvers not watched with WatchDiscovery).
func (m *Metrics) MarkKnown(t discovery.Target) {
	if m != nil {
		m.setKnown(t, true)
	}
}

func (m *Metrics) setKnown(t discovery.Target, known bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.known.Load()
	if _, ok := old[t]; ok == known {
		return
	}
	nm := make(map[discovery.Target]struct{}, len(old)+1)
	for k := range old {
		nm[k] = struct{}{}
	}
	if known {
		nm[t] = struct{}{}
	} else {
		delete(nm, t)
	}
	m.known.Store(&nm)
}

var (
	descEndpoints = prometheus.NewDesc("meshd_discovery_endpoints",
		"Endpoints discovery knows for an app, ready or not.", []string{"app_id", "namespace"}, nil)
	descReady = prometheus.NewDesc("meshd_discovery_endpoints_ready",
		"Endpoints of an app the load balancer currently picks from (healthy, not ejected).", []string{"app_id", "namespace"}, nil)
)

type discoveryCollector struct{ d Discovery }

func (c *discoveryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descEndpoints
	ch <- descReady
}

func (c *discoveryCollector) Collect(ch chan<- prometheus.Metric) {
	for _, t := range c.d.Targets() {
		ch <- prometheus.MustNewConstMetric(descEndpoints, prometheus.GaugeValue, float64(len(c.d.Endpoints(t))), t.AppID, t.Namespace)
		ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, float64(len(c.d.Ready(t))), t.AppID, t.Namespace)
	}
}
