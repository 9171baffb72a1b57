package resiliency_test

import (
	"net/http"
	"strconv"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/meshd/meshd/tests/harness"
)

// scrape parses a sidecar's /metrics with the Prometheus text parser and
// returns the value of metric name for destination app dst (-1: absent).
func scrape(t *testing.T, s *harness.Sidecar, name, dst string) float64 {
	t.Helper()
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(s.Ports.Metrics) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	fam := fams[name]
	if fam == nil {
		return -1
	}
	for _, m := range fam.GetMetric() {
		if label(m, "dst_app_id") != dst {
			continue
		}
		if c := m.GetCounter(); c != nil {
			return c.GetValue()
		}
		return m.GetGauge().GetValue()
	}
	return -1
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
