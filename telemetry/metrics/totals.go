package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Totals are the calls counted so far, all peers summed: what the sidecar's
// admin endpoint reports, so that a reader computes calls/s and the error
// rate from two readings. An error is an answer with an HTTP status of 400
// or above, a gRPC status other than OK, or a status out of range.
type Totals struct {
	Out, ErrorsOut uint64 // calls sent to other apps
	In, ErrorsIn   uint64 // calls received for the app
}

// Totals sums meshd_requests_sent_total and meshd_requests_received_total.
// It reads the counters, off the hot path (no lock the calls take).
func (m *Metrics) Totals() Totals {
	var t Totals
	if m == nil {
		return t
	}
	t.Out, t.ErrorsOut = sum(*m.out.Load())
	t.In, t.ErrorsIn = sum(*m.in.Load())
	return t
}

func sum(series map[seriesKey]*series) (total, errs uint64) {
	var d dto.Metric
	for k, s := range series {
		d.Reset()
		if s.count.Write(&d) != nil {
			continue
		}
		n := uint64(d.GetCounter().GetValue())
		total += n
		if k.code < 0 || (k.grpc && k.code != 0) || (!k.grpc && k.code >= 400) {
			errs += n
		}
	}
	return total, errs
}

// PolicyMode is what meshd_policy_mode reports: how the policy engine
// decides ("enforce", "audit", "mixed", or "off" when no policy hook runs)
// and the default of namespaces without policy ("allow" or "deny").
type PolicyMode struct {
	Mode, Default string
}

// WatchPolicyMode exposes meshd_policy_mode{mode,default} = 1, read at
// scrape time from mode (the mode can change on a policy reload).
func (m *Metrics) WatchPolicyMode(mode func() PolicyMode) error {
	if m == nil || mode == nil {
		return nil
	}
	return m.reg.Register(&policyModeCollector{mode: mode})
}

var descPolicyMode = prometheus.NewDesc("meshd_policy_mode",
	"How the policy engine decides inbound calls (mode: enforce, audit, mixed or off; default: the decision for namespaces without policy); always 1.",
	[]string{"mode", "default"}, nil)

type policyModeCollector struct{ mode func() PolicyMode }

func (c *policyModeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descPolicyMode }

func (c *policyModeCollector) Collect(ch chan<- prometheus.Metric) {
	pm := c.mode()
	ch <- prometheus.MustNewConstMetric(descPolicyMode, prometheus.GaugeValue, 1, pm.Mode, pm.Default)
}

// Mount is one more handler Serve serves beside /metrics.
type Mount struct {
	Pattern string // an http.ServeMux pattern, e.g. "/admin/"
	Handler http.Handler
}
