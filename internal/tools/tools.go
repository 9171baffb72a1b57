//go:build tools

// Package tools pins modules that meshd's packages are about to use, so that
// go.mod and go.sum hold them before the first import lands.
package tools

import (
	_ "github.com/dapr/go-sdk/client"
	_ "github.com/fsnotify/fsnotify"
	_ "github.com/google/cel-go/cel"
	_ "github.com/grandcat/zeroconf"
	_ "github.com/hashicorp/consul/api"
	_ "github.com/open-policy-agent/opa/v1/rego"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/common/expfmt"
	_ "github.com/spf13/cobra"
	_ "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	_ "github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	_ "github.com/spiffe/go-spiffe/v2/workloadapi"
	_ "go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	_ "go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	_ "go.opentelemetry.io/otel/sdk/trace"
	_ "go.yaml.in/yaml/v3"
	_ "golang.org/x/net/http2"
	_ "google.golang.org/grpc"
)
