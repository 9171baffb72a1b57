package daprconfig

import (
	"strings"
	"testing"
	"time"
)

const full = `apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: appconfig
spec:
  tracing:
    samplingRate: "1"
    stdout: true
    otel:
      endpointAddress: "localhost:4317"
      protocol: grpc
      isSecure: false
      headers: ["x-api-key=abc"]
      timeout: 5s
  metrics:
    enabled: true
    latencyDistributionBuckets: [1, 5, 100]
    http:
      increasedCardinality: false
  accessControl:
    defaultAction: deny
    trustDomain: "public"
    policies:
    - appId: frontend
      defaultAction: allow
      trustDomain: public
      namespace: default
`

func TestParseFull(t *testing.T) {
	o, err := Parse("c.yaml", []byte(full))
	if err != nil {
		t.Fatal(err)
	}
	if o.Tracing == nil || o.Tracing.SamplingRate != 1 || o.Tracing.OTel == nil {
		t.Fatalf("tracing = %+v", o.Tracing)
	}
	ot := o.Tracing.OTel
	if ot.EndpointAddress != "localhost:4317" || ot.Protocol != "grpc" || ot.IsSecure || ot.Timeout != 5*time.Second ||
		len(ot.Headers) != 1 || ot.Headers[0] != "x-api-key=abc" {
		t.Fatalf("otel = %+v", ot)
	}
	if o.Metrics == nil || !o.Metrics.Enabled || len(o.Metrics.LatencyBuckets) != 3 || o.Metrics.LatencyBuckets[2] != 100*time.Millisecond {
		t.Fatalf("metrics = %+v", o.Metrics)
	}
	if strings.Join(o.Ignored, ",") != "spec.tracing.stdout,spec.metrics.http" {
		t.Fatalf("ignored = %v", o.Ignored)
	}
}

// FullConfiguration is full, for the external test of accessControl
// (access_test.go).
const FullConfiguration = full

func TestParseDefaults(t *testing.T) {
	cases := []struct {
		name, doc   string
		rate        float64
		tracing     bool
		metrics     bool
		metricsOn   bool
		protocol    string
		otelPresent bool
	}{
		{"no spec", "kind: Configuration\n", 0, false, false, false, "", false},
		{"accessControl only", "kind: Configuration\nspec:\n  accessControl:\n    defaultAction: allow\n", 0, false, false, false, "", false},
		{"tracing without rate", "kind: Configuration\nspec:\n  tracing:\n    otel:\n      endpointAddress: h:4318\n", DefaultSamplingRate, true, false, false, "http", true},
		{"rate 0", "kind: Configuration\nspec:\n  tracing:\n    samplingRate: \"0\"\n", 0, true, false, false, "", false},
		{"rate unquoted", "kind: Configuration\nspec:\n  tracing:\n    samplingRate: 0.5\n", 0.5, true, false, false, "", false},
		{"metrics off", "kind: Configuration\nspec:\n  metrics:\n    enabled: false\n", 0, false, true, false, "", false},
		{"metrics empty", "kind: Configuration\nspec:\n  metrics: {}\n", 0, false, true, true, "", false},
		{"two documents", "kind: Configuration\nspec:\n  tracing:\n    samplingRate: \"1\"\n---\nkind: Configuration\nspec:\n  tracing:\n    samplingRate: \"0.25\"\n", 0.25, true, false, false, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o, err := Parse("f", []byte(c.doc))
			if err != nil {
				t.Fatal(err)
			}
			if (o.Tracing != nil) != c.tracing || (o.Metrics != nil) != c.metrics {
				t.Fatalf("sections: tracing %v metrics %v", o.Tracing, o.Metrics)
			}
			if c.tracing {
				if o.Tracing.SamplingRate != c.rate {
					t.Fatalf("rate %v, want %v", o.Tracing.SamplingRate, c.rate)
				}
				if (o.Tracing.OTel != nil) != c.otelPresent {
					t.Fatalf("otel %v", o.Tracing.OTel)
				}
				if c.otelPresent && o.Tracing.OTel.Protocol != c.protocol {
					t.Fatalf("protocol %q", o.Tracing.OTel.Protocol)
				}
			}
			if c.metrics && o.Metrics.Enabled != c.metricsOn {
				t.Fatalf("metrics enabled %v", o.Metrics.Enabled)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name, doc, want string
	}{
		{"not yaml", "kind: [", "c.yaml:1:"},
		{"wrong kind", "kind: Resiliency\n", "kind Resiliency: want Configuration"},
		{"not a mapping", "- a\n", "want a Configuration mapping"},
		{"unknown tracing key", "kind: Configuration\nspec:\n  tracing:\n    samplingrate: \"1\"\n", `c.yaml:4: spec.tracing: unknown field "samplingrate"`},
		{"rate above 1", "kind: Configuration\nspec:\n  tracing:\n    samplingRate: \"2\"\n", "c.yaml:4: spec.tracing.samplingRate \"2\": want a number between 0 and 1"},
		{"rate negative", "kind: Configuration\nspec:\n  tracing:\n    samplingRate: \"-0.1\"\n", "want a number between 0 and 1"},
		{"rate NaN", "kind: Configuration\nspec:\n  tracing:\n    samplingRate: \"NaN\"\n", "want a number between 0 and 1"},
		{"rate word", "kind: Configuration\nspec:\n  tracing:\n    samplingRate: all\n", "want a number between 0 and 1"},
		{"rate list", "kind: Configuration\nspec:\n  tracing:\n    samplingRate: [1]\n", "want a number between 0 and 1"},
		{"otel no endpoint", "kind: Configuration\nspec:\n  tracing:\n    otel:\n      protocol: grpc\n", "endpointAddress is required"},
		{"otel bad protocol", "kind: Configuration\nspec:\n  tracing:\n    otel:\n      endpointAddress: h:1\n      protocol: thrift\n", `c.yaml:6: spec.tracing.otel.protocol "thrift": want grpc or http`},
		{"otel bad isSecure", "kind: Configuration\nspec:\n  tracing:\n    otel:\n      endpointAddress: h:1\n      isSecure: yes-please\n", "want true or false"},
		{"otel unknown key", "kind: Configuration\nspec:\n  tracing:\n    otel:\n      endpoint: h:1\n", `unknown field "endpoint"`},
		{"otel bad header", "kind: Configuration\nspec:\n  tracing:\n    otel:\n      endpointAddress: h:1\n      headers: [novalue]\n", `want "key=value"`},
		{"otel bad timeout", "kind: Configuration\nspec:\n  tracing:\n    otel:\n      endpointAddress: h:1\n      timeout: soon\n", "want a Go duration"},
		{"otel space", "kind: Configuration\nspec:\n  tracing:\n    otel:\n      endpointAddress: \"h :1\"\n", "contains white space"},
		{"metrics unknown key", "kind: Configuration\nspec:\n  metrics:\n    enable: true\n", `spec.metrics: unknown field "enable"`},
		{"metrics bad enabled", "kind: Configuration\nspec:\n  metrics:\n    enabled: maybe\n", "want true or false"},
		{"buckets decreasing", "kind: Configuration\nspec:\n  metrics:\n    latencyDistributionBuckets: [5, 1]\n", "want positive, increasing integers"},
		{"buckets empty", "kind: Configuration\nspec:\n  metrics:\n    latencyDistributionBuckets: []\n", "non-empty list"},
		{"metrics http unknown", "kind: Configuration\nspec:\n  metrics:\n    http:\n      foo: 1\n", `unknown field "foo"`},
		{"tracing not a mapping", "kind: Configuration\nspec:\n  tracing: on\n", "spec.tracing: want a mapping"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(c.doc))
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "daprconfig: ") {
				t.Fatalf("error %q, want it to contain %q", err, c.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(full))
	f.Add([]byte("kind: Configuration\nspec:\n  tracing:\n    samplingRate: \"0.0001\"\n"))
	f.Add([]byte("kind: Configuration\nspec:\n  metrics:\n    latencyDistributionBuckets: [1,2]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := Parse("f", data)
		if err != nil {
			return
		}
		if o.Tracing != nil {
			if r := o.Tracing.SamplingRate; !(r >= 0 && r <= 1) {
				t.Fatalf("rate %v accepted", r)
			}
			if o.Tracing.OTel != nil && o.Tracing.OTel.EndpointAddress == "" {
				t.Fatal("otel without endpoint accepted")
			}
		}
		if o.Metrics != nil {
			for i := 1; i < len(o.Metrics.LatencyBuckets); i++ {
				if o.Metrics.LatencyBuckets[i] <= o.Metrics.LatencyBuckets[i-1] {
					t.Fatal("non-increasing buckets accepted")
				}
			}
		}
	})
}
