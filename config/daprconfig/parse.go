package daprconfig

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/meshd/meshd/config/strictyaml"
)

// DefaultSamplingRate is Dapr's default spec.tracing.samplingRate: one
// trace in 10,000.
const DefaultSamplingRate = 0.0001

// Error is a problem in a file, at a line.
type Error struct {
	File   string
	Line   int
	Reason string
}

func (e *Error) Error() string {
	return "daprconfig: " + e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Reason
}

// Tracing is spec.tracing.
type Tracing struct {
	// SamplingRate is in [0, 1]; DefaultSamplingRate when the document
	// does not set it. 0 turns tracing off (as in Dapr).
	SamplingRate float64
	// OTel is spec.tracing.otel; nil when absent.
	OTel *OTel
}

// OTel is spec.tracing.otel.
type OTel struct {
	EndpointAddress string        // host:port, or a URL
	Protocol        string        // "grpc" or "http" (default "http" as in Dapr)
	IsSecure        bool          // TLS to the collector
	Headers         []string      // "key=value"
	Timeout         time.Duration // 0: the exporter's default
}

// Metrics is spec.metrics.
type Metrics struct {
	// Enabled is false only when the document says `enabled: false`.
	Enabled bool
	// LatencyBuckets are the upper bounds of the latency histograms
	// (latencyDistributionBuckets, in milliseconds in the document); nil
	// for the default.
	LatencyBuckets []time.Duration
}

// Observability is what a Configuration file says about tracing and
// metrics. A nil section was not in the file.
type Observability struct {
	Tracing *Tracing
	Metrics *Metrics
	// Ignored lists the fields accepted for Dapr compatibility that meshd
	// does not act on ("spec.tracing.zipkin", ...), for a log line.
	Ignored []string
}

// Specs reads the Configuration documents in data (one or more YAML
// documents, each a mapping with kind: Configuration) and returns the spec
// of each, in order; a document without spec gives none. It is the one
// reader of Dapr Configuration files: the sections are parsed by their
// owners (tracing and metrics here, accessControl by policy/accesscontrol).
// Errors are *Error.
func Specs(file string, data []byte) ([]*yaml.Node, error) {
	docs, err := strictyaml.Documents(data)
	if err != nil {
		return nil, &Error{File: file, Line: strictyaml.ErrLine(err), Reason: err.Error()}
	}
	var specs []*yaml.Node
	for _, root := range docs {
		if root.Kind != yaml.MappingNode {
			return nil, &Error{file, root.Line, "want a Configuration mapping"}
		}
		if kind := lookup(root, "kind"); kind == nil || kind.Value != "Configuration" {
			line, got := root.Line, "<none>"
			if kind != nil {
				line, got = kind.Line, kind.Value
			}
			return nil, &Error{file, line, fmt.Sprintf("kind %s: want Configuration", got)}
		}
		if spec := lookup(root, "spec"); spec != nil {
			specs = append(specs, spec)
		}
	}
	return specs, nil
}

// Parse reads the tracing and metrics sections of the Configuration
// documents in data. When several documents set the same section, the last
// wins.
func Parse(file string, data []byte) (Observability, error) {
	specs, err := Specs(file, data)
	if err != nil {
		return Observability{}, err
	}
	var out Observability
	for _, spec := range specs {
		if n := lookup(spec, "tracing"); n != nil {
			t, ign, err := parseTracing(file, n)
			if err != nil {
				return Observability{}, err
			}
			out.Tracing = t
			out.Ignored = append(out.Ignored, ign...)
		}
		if n := lookup(spec, "metrics"); n != nil {
			m, ign, err := parseMetrics(file, n)
			if err != nil {
				return Observability{}, err
			}
			out.Metrics = m
			out.Ignored = append(out.Ignored, ign...)
		}
	}
	return out, nil
}

func parseTracing(file string, n *yaml.Node) (*Tracing, []string, error) {
	if err := fields(file, n, "spec.tracing", "samplingRate", "stdout", "zipkin", "otel"); err != nil {
		return nil, nil, err
	}
	t := &Tracing{SamplingRate: DefaultSamplingRate}
	var ignored []string
	if v := lookup(n, "samplingRate"); v != nil {
		if v.Kind != yaml.ScalarNode {
			return nil, nil, &Error{file, v.Line, "spec.tracing.samplingRate: want a number between 0 and 1"}
		}
		if strings.TrimSpace(v.Value) != "" {
			r, err := strconv.ParseFloat(strings.TrimSpace(v.Value), 64)
			if err != nil || r < 0 || r > 1 || r != r {
				return nil, nil, &Error{file, v.Line, fmt.Sprintf("spec.tracing.samplingRate %q: want a number between 0 and 1", v.Value)}
			}
			t.SamplingRate = r
		}
	}
	if v := lookup(n, "stdout"); v != nil {
		b, err := boolean(file, v, "spec.tracing.stdout")
		if err != nil {
			return nil, nil, err
		}
		if b {
			ignored = append(ignored, "spec.tracing.stdout")
		}
	}
	if v := lookup(n, "zipkin"); v != nil {
		if err := fields(file, v, "spec.tracing.zipkin", "endpointAddress"); err != nil {
			return nil, nil, err
		}
		ignored = append(ignored, "spec.tracing.zipkin")
	}
	if v := lookup(n, "otel"); v != nil {
		o, err := parseOTel(file, v)
		if err != nil {
			return nil, nil, err
		}
		t.OTel = o
	}
	return t, ignored, nil
}

func parseOTel(file string, n *yaml.Node) (*OTel, error) {
	const what = "spec.tracing.otel"
	if err := fields(file, n, what, "endpointAddress", "protocol", "isSecure", "headers", "timeout"); err != nil {
		return nil, err
	}
	o := &OTel{Protocol: "http"}
	if v := lookup(n, "endpointAddress"); v != nil {
		s, err := scalar(file, v, what+".endpointAddress")
		if err != nil {
			return nil, err
		}
		if strings.ContainsAny(s, " \t\r\n") {
			return nil, &Error{file, v.Line, fmt.Sprintf("%s.endpointAddress %q: contains white space", what, s)}
		}
		o.EndpointAddress = s
	}
	if v := lookup(n, "protocol"); v != nil {
		s, err := scalar(file, v, what+".protocol")
		if err != nil {
			return nil, err
		}
		switch strings.ToLower(s) {
		case "grpc":
			o.Protocol = "grpc"
		case "http", "http/protobuf", "":
			o.Protocol = "http"
		default:
			return nil, &Error{file, v.Line, fmt.Sprintf("%s.protocol %q: want grpc or http", what, s)}
		}
	}
	if v := lookup(n, "isSecure"); v != nil {
		b, err := boolean(file, v, what+".isSecure")
		if err != nil {
			return nil, err
		}
		o.IsSecure = b
	}
	if v := lookup(n, "headers"); v != nil {
		if v.Kind != yaml.SequenceNode {
			return nil, &Error{file, v.Line, what + ".headers: want a list of \"key=value\""}
		}
		for _, h := range v.Content {
			s, err := scalar(file, h, what+".headers")
			if err != nil {
				return nil, err
			}
			if k, _, ok := strings.Cut(s, "="); !ok || strings.TrimSpace(k) == "" {
				return nil, &Error{file, h.Line, fmt.Sprintf("%s.headers %q: want \"key=value\"", what, s)}
			}
			o.Headers = append(o.Headers, s)
		}
	}
	if v := lookup(n, "timeout"); v != nil {
		s, err := scalar(file, v, what+".timeout")
		if err != nil {
			return nil, err
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return nil, &Error{file, v.Line, fmt.Sprintf("%s.timeout %q: want a Go duration such as 10s", what, s)}
		}
		o.Timeout = d
	}
	if o.EndpointAddress == "" {
		return nil, &Error{file, n.Line, what + ": endpointAddress is required"}
	}
	return o, nil
}

func parseMetrics(file string, n *yaml.Node) (*Metrics, []string, error) {
	const what = "spec.metrics"
	if err := fields(file, n, what, "enabled", "recordErrorCodes", "latencyDistributionBuckets", "http", "rules"); err != nil {
		return nil, nil, err
	}
	m := &Metrics{Enabled: true}
	var ignored []string
	if v := lookup(n, "enabled"); v != nil {
		b, err := boolean(file, v, what+".enabled")
		if err != nil {
			return nil, nil, err
		}
		m.Enabled = b
	}
	if v := lookup(n, "recordErrorCodes"); v != nil {
		if _, err := boolean(file, v, what+".recordErrorCodes"); err != nil {
			return nil, nil, err
		}
		ignored = append(ignored, what+".recordErrorCodes")
	}
	if v := lookup(n, "latencyDistributionBuckets"); v != nil {
		if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
			return nil, nil, &Error{file, v.Line, what + ".latencyDistributionBuckets: want a non-empty list of milliseconds"}
		}
		prev := -1
		for _, b := range v.Content {
			ms, err := strconv.Atoi(b.Value)
			if b.Kind != yaml.ScalarNode || err != nil || ms <= 0 || ms <= prev {
				return nil, nil, &Error{file, b.Line, fmt.Sprintf("%s.latencyDistributionBuckets %q: want positive, increasing integers (milliseconds)", what, b.Value)}
			}
			prev = ms
			m.LatencyBuckets = append(m.LatencyBuckets, time.Duration(ms)*time.Millisecond)
		}
	}
	if v := lookup(n, "http"); v != nil {
		if err := fields(file, v, what+".http", "increasedCardinality", "pathMatching", "excludeVerbs"); err != nil {
			return nil, nil, err
		}
		ignored = append(ignored, what+".http")
	}
	if v := lookup(n, "rules"); v != nil {
		if v.Kind != yaml.SequenceNode {
			return nil, nil, &Error{file, v.Line, what + ".rules: want a list"}
		}
		ignored = append(ignored, what+".rules")
	}
	return m, ignored, nil
}

func scalar(file string, v *yaml.Node, what string) (string, error) {
	if v.Kind != yaml.ScalarNode {
		return "", &Error{file, v.Line, what + ": want a string"}
	}
	return strings.TrimSpace(v.Value), nil
}

func boolean(file string, v *yaml.Node, what string) (bool, error) {
	if v.Kind == yaml.ScalarNode {
		switch strings.ToLower(strings.TrimSpace(v.Value)) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
	}
	return false, &Error{file, v.Line, fmt.Sprintf("%s %q: want true or false", what, v.Value)}
}

func lookup(m *yaml.Node, key string) *yaml.Node { return strictyaml.Lookup(m, key) }

// fields checks that m is a mapping with only the allowed keys.
func fields(file string, m *yaml.Node, what string, allowed ...string) error {
	if line, msg, ok := strictyaml.Fields(m, what, allowed...); !ok {
		return &Error{file, line, msg}
	}
	return nil
}
