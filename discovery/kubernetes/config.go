package kubernetes

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/meshd/meshd/config/strictyaml"
	"github.com/meshd/meshd/discovery"
)

// MaxFileSize is the largest configuration file Load accepts.
const MaxFileSize = 1 << 20

// Defaults of Config.
const (
	// DefaultAppIDLabel is the label of a Service (copied by Kubernetes to
	// its EndpointSlices) whose value is the app ID. Dapr's vocabulary,
	// dapr.io/app-id, is accepted with appIDLabel: dapr.io/app-id.
	DefaultAppIDLabel = "meshd.io/app-id"
	// DaprAppIDLabel is Dapr's app-ID key, for appIDLabel.
	DaprAppIDLabel = "dapr.io/app-id"
	// DefaultPortName is the name of the sidecar's internal (mTLS) port in
	// the Service and its EndpointSlices (Dapr's is dapr-internal).
	DefaultPortName = "meshd-internal"
	// DefaultResync is how often the informers re-deliver their cached
	// objects (a local resync: no request to the API server).
	DefaultResync = 10 * time.Minute
	// DefaultMaxWatches bounds the namespaces one sidecar watches at once.
	DefaultMaxWatches = 64
	// MaxMaxWatches is the largest maxWatches accepted.
	MaxMaxWatches = 1024
	// DefaultStartTimeout bounds the checks and the first list at start.
	DefaultStartTimeout = 10 * time.Second
)

// Config is the kubernetes resolver's YAML document (--resolver-config):
//
//	kubeconfig: /etc/meshd/kubeconfig   # "" or unset: in-cluster (the pod's service account)
//	context: ""                         # kubeconfig context; "" = its current context
//	namespaces: [shop]                  # watched from the start, besides the sidecar's own
//	clusterWide: false                  # one watch over every namespace instead
//	appIDLabel: meshd.io/app-id
//	portName: meshd-internal
//	resync: 10m
//	maxWatches: 64
//	startTimeout: 10s
type Config struct {
	// Kubeconfig is the path of a kubeconfig file; "" means in-cluster
	// configuration (KUBERNETES_SERVICE_HOST and the mounted service
	// account token).
	Kubeconfig string `yaml:"kubeconfig"`
	// Context selects a kubeconfig context ("" = its current context).
	Context string `yaml:"context"`
	// Namespaces are watched from the start, besides the sidecar's own
	// namespace; others are watched on first use (a call into them).
	Namespaces []string `yaml:"namespaces"`
	// ClusterWide makes one watch over all namespaces (needs list and
	// watch on endpointslices cluster-wide: a ClusterRole binding).
	ClusterWide bool `yaml:"clusterWide"`
	// AppIDLabel is the Service / EndpointSlice label holding the app ID
	// (default DefaultAppIDLabel).
	AppIDLabel string `yaml:"appIDLabel"`
	// PortName is the name of the sidecar's internal port in the
	// EndpointSlices (default DefaultPortName).
	PortName string `yaml:"portName"`
	// Resync is the informers' resync period (default DefaultResync, at
	// least 1s).
	Resync Duration `yaml:"resync"`
	// MaxWatches bounds the namespaces watched at once (default
	// DefaultMaxWatches, 1..MaxMaxWatches). A call into a further
	// namespace is not resolved (logged once per namespace).
	MaxWatches int `yaml:"maxWatches"`
	// StartTimeout bounds the permission checks and the first list at
	// start (default DefaultStartTimeout, at least 1s).
	StartTimeout Duration `yaml:"startTimeout"`
}

// Duration is a Go duration in YAML ("1s", "500ms").
type Duration = strictyaml.Duration

// Load reads and parses the file at path.
func Load(path string) (*Config, error) {
	data, err := discovery.ReadFile(path, MaxFileSize)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return cfg, nil
}

// Parse validates a kubernetes resolver document strictly and fills in
// the defaults: unknown fields, duplicate keys, more than one YAML
// document, bad durations, namespace names Kubernetes refuses (or named
// twice), namespaces together with clusterWide, a label key or port name
// Kubernetes refuses and maxWatches out of range are errors. An empty
// document is the default configuration (in-cluster, the sidecar's own
// namespace, meshd.io/app-id, meshd-internal).
func Parse(data []byte) (*Config, error) {
	cfg, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: config: %w", err)
	}
	return cfg, nil
}

func parse(data []byte) (*Config, error) {
	var cfg Config
	if err := strictyaml.Decode(data, &cfg); err != nil && !errors.Is(err, strictyaml.ErrEmpty) {
		return nil, err
	}
	if cfg.AppIDLabel == "" {
		cfg.AppIDLabel = DefaultAppIDLabel
	}
	if cfg.PortName == "" {
		cfg.PortName = DefaultPortName
	}
	if cfg.Resync == 0 {
		cfg.Resync = Duration(DefaultResync)
	}
	if cfg.MaxWatches == 0 {
		cfg.MaxWatches = DefaultMaxWatches
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = Duration(DefaultStartTimeout)
	}
	if strings.ContainsRune(cfg.Kubeconfig, 0) {
		return nil, errors.New("kubeconfig: path contains a NUL byte")
	}
	if errs := validation.IsQualifiedName(cfg.AppIDLabel); len(errs) > 0 {
		return nil, fmt.Errorf("appIDLabel %q is not a Kubernetes label key: %s", cfg.AppIDLabel, strings.Join(errs, "; "))
	}
	if errs := validation.IsValidPortName(cfg.PortName); len(errs) > 0 {
		return nil, fmt.Errorf("portName %q is not a Kubernetes port name: %s", cfg.PortName, strings.Join(errs, "; "))
	}
	switch {
	case cfg.Resync < Duration(time.Second):
		return nil, fmt.Errorf("resync %s: at least 1s", time.Duration(cfg.Resync))
	case cfg.StartTimeout < Duration(time.Second):
		return nil, fmt.Errorf("startTimeout %s: at least 1s", time.Duration(cfg.StartTimeout))
	case cfg.MaxWatches < 1 || cfg.MaxWatches > MaxMaxWatches:
		return nil, fmt.Errorf("maxWatches %d: want 1 to %d", cfg.MaxWatches, MaxMaxWatches)
	case cfg.ClusterWide && len(cfg.Namespaces) > 0:
		return nil, errors.New("namespaces and clusterWide: a cluster-wide watch covers every namespace; give one or the other")
	case len(cfg.Namespaces) >= cfg.MaxWatches:
		// The sidecar's own namespace takes one watch too.
		return nil, fmt.Errorf("namespaces: %d listed, but maxWatches %d must leave room for the sidecar's own namespace", len(cfg.Namespaces), cfg.MaxWatches)
	}
	seen := map[string]bool{}
	for i, ns := range cfg.Namespaces {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return nil, fmt.Errorf("namespaces[%d] %q is not a Kubernetes namespace name: %s", i, ns, strings.Join(errs, "; "))
		}
		if seen[ns] {
			return nil, fmt.Errorf("namespaces[%d] %q listed twice", i, ns)
		}
		seen[ns] = true
	}
	return &cfg, nil
}
