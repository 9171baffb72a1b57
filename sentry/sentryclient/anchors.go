package sentryclient

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"os"
	"slices"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshd/meshd/certs"
)

// WithAnchorsFile makes the client also trust, for its connections to
// sentry (never for anything else), the CA certificates in path as they
// are when it connects: the --trust-anchors-file the process started with,
// which sentry (its bundle.pem) or the operator keeps current. A client
// that missed a root rotation — its bundle stream was down (sentry
// restarted, the host cut off) while sentry published the new root and
// switched its own certificate to it — cannot verify sentry with the
// bundle it holds, and so could never get the new one; with the file it
// reconnects as a process started afresh would (#18). An unreadable or bad
// file adds nothing (the bundle alone is trusted).
func WithAnchorsFile(path string) Option { return func(c *Client) { c.anchorsFile = path } }

// sentryTrust is the bundle source of the client's connections to sentry:
// the bundle it holds, plus the anchors file's roots when it has one.
type sentryTrust struct {
	c    *Client
	mu   sync.Mutex
	raw  []byte              // the file as last read
	file []*x509.Certificate // its roots
}

func (s *sentryTrust) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b, err := s.c.GetX509BundleForTrustDomain(td)
	if err != nil {
		return nil, err
	}
	extra := s.fileRoots()
	roots := b.X509Authorities()
	added := false
	for _, r := range extra {
		if !slices.ContainsFunc(roots, r.Equal) {
			roots = append(roots, r)
			added = true
		}
	}
	if !added {
		return b, nil
	}
	return x509bundle.FromX509Authorities(td, roots), nil
}

// fileRoots reads the anchors file (parsed again only when it changed).
func (s *sentryTrust) fileRoots() []*x509.Certificate {
	raw, err := os.ReadFile(s.c.anchorsFile)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.c.log.Debug("sentryclient: trust anchors file unreadable; trusting the bundle alone", "file", s.c.anchorsFile, "err", err)
		return nil
	}
	if bytes.Equal(raw, s.raw) {
		return s.file
	}
	roots, err := certs.ParseCertsPEM(raw)
	if err == nil {
		for i, r := range roots {
			if !r.IsCA {
				err = fmt.Errorf("certificate %d is not a CA", i)
				break
			}
		}
	}
	if err != nil {
		s.c.log.Debug("sentryclient: bad trust anchors file; trusting the bundle alone", "file", s.c.anchorsFile, "err", err)
		return nil
	}
	s.raw, s.file = raw, roots
	return roots
}
