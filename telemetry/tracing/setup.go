package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/config/daprconfig"
)

// SetupConfig says where the tracing settings come from.
type SetupConfig struct {
	Identity certs.Identity
	// Spec is spec.tracing of the --config file; nil when absent.
	Spec *daprconfig.Tracing
	// Getenv reads the environment (nil: os.Getenv).
	Getenv func(string) string
	Logger *slog.Logger
}

// Settings is the resolved tracing configuration (see Resolve).
type Settings struct {
	Enabled      bool
	SamplingRate float64
	// Protocol is "grpc" or "http".
	Protocol string
	// Endpoint is spec.tracing.otel.endpointAddress ("" when the
	// exporter reads OTEL_EXPORTER_OTLP_* itself).
	Endpoint string
	Insecure bool
	Headers  map[string]string
	Timeout  time.Duration
	Source   string // "config", "env" or "" when disabled
}

// Resolve decides the settings, in this order: spec.tracing.otel of the
// Configuration, else OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
// OTEL_EXPORTER_OTLP_ENDPOINT (the exporter then reads all the
// OTEL_EXPORTER_OTLP_* variables itself), else tracing is off. The
// sampling rate is spec.tracing.samplingRate when the section exists,
// else OTEL_TRACES_SAMPLER_ARG with a ratio sampler, else Dapr's 0.0001;
// a rate of 0 turns tracing off (as in Dapr). OTEL_SDK_DISABLED=true
// turns it off too.
func Resolve(cfg SetupConfig) (Settings, error) {
	getenv := cfg.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	var s Settings
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return s, nil
	}
	s.SamplingRate = daprconfig.DefaultSamplingRate
	if cfg.Spec != nil {
		s.SamplingRate = cfg.Spec.SamplingRate
	} else if sampler := getenv("OTEL_TRACES_SAMPLER"); sampler == "traceidratio" || sampler == "parentbased_traceidratio" {
		if arg := getenv("OTEL_TRACES_SAMPLER_ARG"); arg != "" {
			r, err := strconv.ParseFloat(arg, 64)
			if err != nil || !(r >= 0 && r <= 1) {
				return s, fmt.Errorf("tracing: OTEL_TRACES_SAMPLER_ARG %q: want a number between 0 and 1", arg)
			}
			s.SamplingRate = r
		}
	}
	switch {
	case cfg.Spec != nil && cfg.Spec.OTel != nil:
		o := cfg.Spec.OTel
		s.Source, s.Protocol, s.Endpoint, s.Insecure = "config", o.Protocol, o.EndpointAddress, !o.IsSecure
		if len(o.Headers) > 0 {
			s.Headers = make(map[string]string, len(o.Headers))
			for _, kv := range o.Headers {
				k, v, _ := strings.Cut(kv, "=")
				s.Headers[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
		}
		if o.Timeout > 0 {
			s.Timeout = o.Timeout
		}
	case getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "":
		s.Source = "env"
		proto := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
		if proto == "" {
			proto = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
		}
		switch proto {
		case "grpc":
			s.Protocol = "grpc"
		case "", "http/protobuf":
			s.Protocol = "http" // the OpenTelemetry default
		default:
			return s, fmt.Errorf("tracing: OTEL_EXPORTER_OTLP_PROTOCOL %q: want grpc or http/protobuf", proto)
		}
	default:
		return s, nil
	}
	s.Enabled = s.SamplingRate > 0
	if !s.Enabled {
		s.Source = ""
	}
	return s, nil
}

// Setup resolves the settings and builds the OTLP exporter and the
// Tracer. It returns nil, nil when tracing is off.
func Setup(ctx context.Context, cfg SetupConfig) (*Tracer, error) {
	s, err := Resolve(cfg)
	if err != nil {
		return nil, err
	}
	log := logger(cfg.Logger)
	if !s.Enabled {
		log.Debug("tracing: off (no OTLP exporter configured or sampling rate 0)")
		return nil, nil
	}
	exp, err := NewExporter(ctx, s)
	if err != nil {
		return nil, err
	}
	t, err := New(Options{Identity: cfg.Identity, SamplingRate: s.SamplingRate, Exporter: exp})
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, err
	}
	log.Info("tracing: on", "source", s.Source, "protocol", s.Protocol, "endpoint", s.Endpoint, "sampling_rate", s.SamplingRate)
	return t, nil
}

// NewExporter builds the OTLP exporter of s (it does not connect yet).
func NewExporter(ctx context.Context, s Settings) (sdktrace.SpanExporter, error) {
	switch s.Protocol {
	case "grpc":
		var opts []otlptracegrpc.Option
		if s.Endpoint != "" {
			if strings.Contains(s.Endpoint, "://") {
				opts = append(opts, otlptracegrpc.WithEndpointURL(s.Endpoint))
			} else {
				opts = append(opts, otlptracegrpc.WithEndpoint(s.Endpoint))
				if s.Insecure {
					opts = append(opts, otlptracegrpc.WithInsecure())
				}
			}
		}
		if s.Headers != nil {
			opts = append(opts, otlptracegrpc.WithHeaders(s.Headers))
		}
		if s.Timeout > 0 {
			opts = append(opts, otlptracegrpc.WithTimeout(s.Timeout))
		}
		exp, err := otlptracegrpc.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("tracing: OTLP gRPC exporter: %w", err)
		}
		return exp, nil
	case "http":
		var opts []otlptracehttp.Option
		if s.Endpoint != "" {
			if strings.Contains(s.Endpoint, "://") {
				opts = append(opts, otlptracehttp.WithEndpointURL(httpTracesURL(s.Endpoint)))
			} else {
				opts = append(opts, otlptracehttp.WithEndpoint(s.Endpoint))
				if s.Insecure {
					opts = append(opts, otlptracehttp.WithInsecure())
				}
			}
		}
		if s.Headers != nil {
			opts = append(opts, otlptracehttp.WithHeaders(s.Headers))
		}
		if s.Timeout > 0 {
			opts = append(opts, otlptracehttp.WithTimeout(s.Timeout))
		}
		exp, err := otlptracehttp.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("tracing: OTLP HTTP exporter: %w", err)
		}
		return exp, nil
	}
	return nil, fmt.Errorf("tracing: protocol %q: want grpc or http", s.Protocol)
}

// httpTracesURL gives an OTLP/HTTP endpoint URL without a path the
// standard traces path: Dapr's endpointAddress names the collector, not
// its route, and the exporter would otherwise post to "/".
func httpTracesURL(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Path != "" && u.Path != "/") {
		return endpoint
	}
	u.Path = "/v1/traces"
	return u.String()
}
