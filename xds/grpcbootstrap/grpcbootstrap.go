package grpcbootstrap

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/certs/svidfiles"
	"github.com/meshd/meshd/xds/grpcxds"
)

// DefaultRefreshInterval is how often grpc-go's file_watcher re-reads the
// SVID files. A rotation happens at half of the SVID's lifetime (1h by
// default), so a minute is plenty and costs four small file reads.
const DefaultRefreshInterval = time.Minute

// EnvSPIFFE is the grpc-go environment variable that makes its "tls"
// channel credentials verify the control plane with the SPIFFE trust bundle
// map.
const EnvSPIFFE = "GRPC_EXPERIMENTAL_XDS_MTLS_SPIFFE"

// Config says what goes into a bootstrap.
type Config struct {
	// ServerURI is the control plane's host:port (required).
	ServerURI string
	// NodeID identifies the client to the control plane (required).
	NodeID string
	// SVIDDir is the directory of the SVID files (certs/svidfiles); it is
	// made absolute, since grpc-go resolves paths against the client's
	// working directory (required).
	SVIDDir string
	// CertProviderInstance names the file_watcher instance; it must be the
	// name the control plane's Clusters use ("" =
	// grpcxds.DefaultCertProviderInstance).
	CertProviderInstance string
	// RefreshInterval of the file_watcher (0 = DefaultRefreshInterval).
	RefreshInterval time.Duration
	// ControlPlaneID is the control plane's SPIFFE ID. If set, the
	// bootstrap lists the "meshd_spiffe" channel credentials
	// (xds/grpccreds), which accept only this ID, before grpc-go's "tls".
	ControlPlaneID string
}

// The control plane's default identity: spiffe://{td}/ns/meshd-system/controlplane.
const (
	DefaultControlPlaneNamespace = "meshd-system"
	DefaultControlPlaneApp       = "controlplane"
)

// ControlPlaneID returns the default control plane SPIFFE ID of trust
// domain td.
func ControlPlaneID(td string) (string, error) {
	id, err := certs.NewIdentity(td, DefaultControlPlaneNamespace, DefaultControlPlaneApp)
	if err != nil {
		return "", fmt.Errorf("grpcbootstrap: %w", err)
	}
	return id.String(), nil
}

type fileConfig struct {
	CertificateFile          string `json:"certificate_file"`
	PrivateKeyFile           string `json:"private_key_file"`
	CACertificateFile        string `json:"ca_certificate_file"`
	SPIFFETrustBundleMapFile string `json:"spiffe_trust_bundle_map_file,omitempty"`
	RefreshInterval          string `json:"refresh_interval"`
}

type channelCreds struct {
	Type   string `json:"type"`
	Config any    `json:"config"`
}

// meshdConfig is the config of xds/grpccreds's type (repeated here, not
// imported, so that writing a bootstrap does not register credentials).
type meshdConfig struct {
	CertificateFile   string `json:"certificate_file"`
	PrivateKeyFile    string `json:"private_key_file"`
	CACertificateFile string `json:"ca_certificate_file"`
	ServerSPIFFEID    string `json:"server_spiffe_id"`
	RefreshInterval   string `json:"refresh_interval"`
}

// MeshdCredsType is xds/grpccreds.Name.
const MeshdCredsType = "meshd_spiffe"

type server struct {
	ServerURI      string         `json:"server_uri"`
	ChannelCreds   []channelCreds `json:"channel_creds"`
	ServerFeatures []string       `json:"server_features"`
}

type node struct {
	ID string `json:"id"`
}

type provider struct {
	PluginName string     `json:"plugin_name"`
	Config     fileConfig `json:"config"`
}

type bootstrap struct {
	XDSServers           []server            `json:"xds_servers"`
	Node                 node                `json:"node"`
	CertificateProviders map[string]provider `json:"certificate_providers"`
}

// JSON returns the bootstrap for cfg, indented.
func JSON(cfg Config) ([]byte, error) {
	if err := checkServerURI(cfg.ServerURI); err != nil {
		return nil, err
	}
	if strings.TrimSpace(cfg.NodeID) == "" {
		return nil, errors.New("grpcbootstrap: node ID is empty")
	}
	if cfg.SVIDDir == "" {
		return nil, errors.New("grpcbootstrap: SVID directory is empty")
	}
	dir, err := filepath.Abs(cfg.SVIDDir)
	if err != nil {
		return nil, fmt.Errorf("grpcbootstrap: SVID directory: %w", err)
	}
	inst := cfg.CertProviderInstance
	if inst == "" {
		inst = grpcxds.DefaultCertProviderInstance
	}
	refresh := cfg.RefreshInterval
	switch {
	case refresh == 0:
		refresh = DefaultRefreshInterval
	case refresh < time.Millisecond:
		return nil, fmt.Errorf("grpcbootstrap: refresh interval %v is below 1ms", refresh)
	}
	// protojson's Duration: seconds with up to nine fractional digits.
	ri := strconv.FormatFloat(refresh.Seconds(), 'f', -1, 64) + "s"
	p := svidfiles.PathsIn(dir)
	files := fileConfig{
		CertificateFile:   p.Cert,
		PrivateKeyFile:    p.Key,
		CACertificateFile: p.Bundle,
		RefreshInterval:   ri,
	}
	xdsFiles := files
	xdsFiles.SPIFFETrustBundleMapFile = p.BundleMap
	var creds []channelCreds
	if cfg.ControlPlaneID != "" {
		id, err := spiffeid.FromString(cfg.ControlPlaneID)
		if err != nil {
			return nil, fmt.Errorf("grpcbootstrap: control plane ID %q: %w", cfg.ControlPlaneID, err)
		}
		creds = append(creds, channelCreds{Type: MeshdCredsType, Config: meshdConfig{
			CertificateFile: p.Cert, PrivateKeyFile: p.Key, CACertificateFile: p.Bundle,
			ServerSPIFFEID: id.String(), RefreshInterval: ri,
		}})
	}
	creds = append(creds, channelCreds{Type: "tls", Config: xdsFiles})
	b := bootstrap{
		XDSServers: []server{{
			ServerURI:      cfg.ServerURI,
			ChannelCreds:   creds,
			ServerFeatures: []string{"xds_v3"},
		}},
		Node:                 node{ID: cfg.NodeID},
		CertificateProviders: map[string]provider{inst: {PluginName: "file_watcher", Config: files}},
	}
	out, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("grpcbootstrap: %w", err)
	}
	return append(out, '\n'), nil
}

// WriteFile writes the bootstrap for cfg to path atomically (0644).
func WriteFile(path string, cfg Config) error {
	b, err := JSON(cfg)
	if err != nil {
		return err
	}
	if err := certs.WriteFileAtomic(path, b, 0o644); err != nil {
		return fmt.Errorf("grpcbootstrap: %w", err)
	}
	return nil
}

// NodeID is the default node ID of a client app in namespace ns:
// "{app}.{ns}~{host}".
func NodeID(app, ns, host string) string { return app + "." + ns + "~" + host }

func checkServerURI(uri string) error {
	if uri == "" {
		return errors.New("grpcbootstrap: control plane address is empty")
	}
	host, port, err := net.SplitHostPort(uri)
	if err != nil {
		return fmt.Errorf("grpcbootstrap: control plane address %q: %w", uri, err)
	}
	if host == "" {
		return fmt.Errorf("grpcbootstrap: control plane address %q has no host", uri)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("grpcbootstrap: control plane address %q: bad port", uri)
	}
	return nil
}
