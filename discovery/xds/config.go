package xds

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshd/meshd/config/strictyaml"
	"github.com/meshd/meshd/discovery"
)

// MaxFileSize is the largest --resolver-config file read.
const MaxFileSize = 64 << 10

// Defaults of Config.
const (
	// DefaultControlPlaneNamespace and DefaultControlPlaneApp make the
	// control plane's default SPIFFE ID,
	// spiffe://{td}/ns/meshd-system/controlplane.
	DefaultControlPlaneNamespace = "meshd-system"
	DefaultControlPlaneApp       = "controlplane"
	DefaultStartTimeout          = 10 * time.Second
)

// Config is the --resolver-config file of the xds resolver:
//
//	address: 127.0.0.1:15010        # the control plane (required)
//	controlPlaneID: spiffe://cluster.local/ns/meshd-system/controlplane   # optional
//	startTimeout: 10s               # optional
type Config struct {
	// Address is host:port of the control plane's ADS port.
	Address string `yaml:"address"`
	// ControlPlaneID is the SPIFFE ID the control plane's certificate must
	// carry (default: spiffe://{sidecar's trust domain}/ns/meshd-system/controlplane).
	ControlPlaneID string `yaml:"controlPlaneID"`
	// StartTimeout bounds the wait for the first complete state at start.
	StartTimeout strictyaml.Duration `yaml:"startTimeout"`
}

// Load reads and checks the file at path.
func Load(path string) (*Config, error) {
	data, err := discovery.ReadFile(path, MaxFileSize)
	if err != nil {
		return nil, fmt.Errorf("xds: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("xds: %s: %w", path, err)
	}
	return c, nil
}

// Parse checks a --resolver-config document strictly: unknown fields,
// a missing or bad address, a control plane ID that is not a SPIFFE ID and
// a negative timeout are errors.
func Parse(data []byte) (*Config, error) {
	var c Config
	if err := strictyaml.Decode(data, &c); err != nil {
		if errors.Is(err, strictyaml.ErrEmpty) {
			return nil, errors.New("file is empty (want address: host:port)")
		}
		return nil, err
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	return &c, nil
}

// FromFlags is the configuration meshd's --control-plane-address and
// --control-plane-namespace make (no file): the control plane at address,
// whose SPIFFE ID is spiffe://{td}/ns/{namespace}/controlplane ("" namespace:
// DefaultControlPlaneNamespace).
func FromFlags(address, namespace string, td spiffeid.TrustDomain) (*Config, error) {
	c := Config{Address: address}
	if namespace == "" {
		namespace = DefaultControlPlaneNamespace
	}
	id, err := spiffeid.FromSegments(td, "ns", namespace, DefaultControlPlaneApp)
	if err != nil {
		return nil, fmt.Errorf("--control-plane-namespace %q: %w", namespace, err)
	}
	c.ControlPlaneID = id.String()
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("--control-plane-address: %w", err)
	}
	return &c, nil
}

func (c *Config) check() error {
	if c.Address == "" {
		return errors.New("no address: (the control plane's host:port)")
	}
	host, port, err := net.SplitHostPort(c.Address)
	if err != nil || host == "" {
		return fmt.Errorf("address %q: want host:port", c.Address)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("address %q: bad port", c.Address)
	}
	if c.ControlPlaneID != "" {
		if _, err := spiffeid.FromString(c.ControlPlaneID); err != nil {
			return fmt.Errorf("controlPlaneID %q: %w", c.ControlPlaneID, err)
		}
	}
	if c.StartTimeout < 0 {
		return errors.New("startTimeout: must not be negative")
	}
	return nil
}
