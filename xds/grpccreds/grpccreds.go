package grpccreds

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/tls/certprovider"
	"google.golang.org/grpc/credentials/tls/certprovider/pemfile"
	"google.golang.org/grpc/xds/bootstrap"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Name is the channel credentials type in the bootstrap.
const Name = "meshd_spiffe"

// DefaultRefreshInterval is how often the files are re-read when the config
// names no refresh_interval.
const DefaultRefreshInterval = time.Minute

func init() { bootstrap.RegisterChannelCredentials(Builder{}) }

// Config is the JSON config of the type.
type Config struct {
	CertificateFile   string `json:"certificate_file"`
	PrivateKeyFile    string `json:"private_key_file"`
	CACertificateFile string `json:"ca_certificate_file"`
	ServerSPIFFEID    string `json:"server_spiffe_id"`
	RefreshInterval   string `json:"refresh_interval,omitempty"` // a protobuf JSON Duration: "60s"
}

// Builder builds the credentials from a bootstrap config; it implements
// grpc-go's bootstrap.ChannelCredentials.
type Builder struct{}

// Name implements bootstrap.ChannelCredentials.
func (Builder) Name() string { return Name }

// Build implements bootstrap.ChannelCredentials.
func (Builder) Build(raw json.RawMessage) (credentials.Bundle, func(), error) {
	var cfg Config
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return nil, nil, fmt.Errorf("grpccreds: %s config: %w", Name, err)
	}
	c, err := New(cfg)
	if err != nil {
		return nil, nil, err
	}
	return bundle{c}, c.Close, nil
}

// Creds are client transport credentials to the control plane.
type Creds struct {
	prov certprovider.Provider
	id   spiffeid.ID
}

// New validates cfg and starts watching its files.
func New(cfg Config) (*Creds, error) {
	switch {
	case cfg.CertificateFile == "" || cfg.PrivateKeyFile == "":
		return nil, errors.New("grpccreds: certificate_file and private_key_file are required")
	case cfg.CACertificateFile == "":
		return nil, errors.New("grpccreds: ca_certificate_file is required")
	case cfg.ServerSPIFFEID == "":
		return nil, errors.New("grpccreds: server_spiffe_id is required")
	}
	id, err := spiffeid.FromString(cfg.ServerSPIFFEID)
	if err != nil {
		return nil, fmt.Errorf("grpccreds: server_spiffe_id %q: %w", cfg.ServerSPIFFEID, err)
	}
	refresh := DefaultRefreshInterval
	if cfg.RefreshInterval != "" {
		var d durationpb.Duration
		if err := protojson.Unmarshal([]byte(`"`+cfg.RefreshInterval+`"`), &d); err != nil {
			return nil, fmt.Errorf("grpccreds: refresh_interval %q: %w", cfg.RefreshInterval, err)
		}
		if refresh = d.AsDuration(); refresh <= 0 {
			return nil, fmt.Errorf("grpccreds: refresh_interval %q is not positive", cfg.RefreshInterval)
		}
	}
	prov, err := pemfile.NewProvider(pemfile.Options{
		CertFile: cfg.CertificateFile, KeyFile: cfg.PrivateKeyFile, RootFile: cfg.CACertificateFile,
		RefreshDuration: refresh,
	})
	if err != nil {
		return nil, fmt.Errorf("grpccreds: %w", err)
	}
	return &Creds{prov: prov, id: id}, nil
}

// Close stops watching the files.
func (c *Creds) Close() { c.prov.Close() }

// ClientHandshake implements credentials.TransportCredentials: TLS with the
// current SVID, the server verified against the current roots and by its
// SPIFFE ID (never by host name).
func (c *Creds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	km, err := c.prov.KeyMaterial(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("grpccreds: SVID files: %w", err)
	}
	if len(km.Certs) == 0 || km.Roots == nil {
		return nil, nil, errors.New("grpccreds: SVID files hold no certificate or no roots")
	}
	cfg := &tls.Config{
		Certificates: km.Certs,
		MinVersion:   tls.VersionTLS12,
		// Verification is by SPIFFE ID in VerifyPeerCertificate; the
		// standard one would check the host name, which an SVID lacks.
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: verifier(km.Roots, c.id),
	}
	return credentials.NewTLS(cfg).ClientHandshake(ctx, authority, raw)
}

// verifier checks the chain against roots and the leaf's SPIFFE ID.
func verifier(roots *x509.CertPool, want spiffeid.ID) func([][]byte, [][]*x509.Certificate) error {
	return func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		if len(rawCerts) == 0 {
			return errors.New("grpccreds: control plane presented no certificate")
		}
		chain := make([]*x509.Certificate, len(rawCerts))
		for i, b := range rawCerts {
			cert, err := x509.ParseCertificate(b)
			if err != nil {
				return fmt.Errorf("grpccreds: control plane certificate: %w", err)
			}
			chain[i] = cert
		}
		inter := x509.NewCertPool()
		for _, cert := range chain[1:] {
			inter.AddCert(cert)
		}
		if _, err := chain[0].Verify(x509.VerifyOptions{
			Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}); err != nil {
			return fmt.Errorf("grpccreds: control plane certificate: %w", err)
		}
		id, err := x509svid.IDFromCert(chain[0])
		if err != nil {
			return fmt.Errorf("grpccreds: control plane certificate: %w", err)
		}
		if id != want {
			return fmt.Errorf("grpccreds: control plane is %s, want %s", id, want)
		}
		return nil
	}
}

// ServerHandshake implements credentials.TransportCredentials; these are
// client credentials only.
func (c *Creds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("grpccreds: client credentials only")
}

// Info implements credentials.TransportCredentials.
func (c *Creds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

// Clone implements credentials.TransportCredentials; the clone shares the
// file watcher.
func (c *Creds) Clone() credentials.TransportCredentials { return &Creds{prov: c.prov, id: c.id} }

// OverrideServerName implements credentials.TransportCredentials; the
// server is known by its SPIFFE ID, not by name.
func (c *Creds) OverrideServerName(string) error {
	return errors.New("grpccreds: the control plane is verified by SPIFFE ID, not by server name")
}

// bundle is the credentials.Bundle grpc-go's xDS client uses.
type bundle struct{ c *Creds }

func (b bundle) TransportCredentials() credentials.TransportCredentials { return b.c }
func (b bundle) PerRPCCredentials() credentials.PerRPCCredentials       { return nil }
func (b bundle) NewWithMode(string) (credentials.Bundle, error) {
	return nil, errors.New("grpccreds: one mode only")
}
