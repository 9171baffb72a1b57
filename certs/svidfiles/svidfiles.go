package svidfiles

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshd/meshd/certs"
)

// File names inside the directory.
const (
	CertFile      = "svid.pem"
	KeyFile       = "svid-key.pem"
	BundleFile    = "bundle.pem"
	BundleMapFile = "spiffe-bundle-map.json"
)

// Paths are the files of one directory.
type Paths struct {
	Cert, Key, Bundle, BundleMap string
}

// PathsIn returns the paths of the files in dir.
func PathsIn(dir string) Paths {
	return Paths{
		Cert:      filepath.Join(dir, CertFile),
		Key:       filepath.Join(dir, KeyFile),
		Bundle:    filepath.Join(dir, BundleFile),
		BundleMap: filepath.Join(dir, BundleMapFile),
	}
}

// Source is what Run follows; *certs.Source implements it.
type Source interface {
	x509svid.Source
	x509bundle.Source
	// Updated returns a channel closed on the next change (certs.Source).
	Updated() <-chan struct{}
}

// contents are the bytes of the four files.
type contents struct {
	cert, key, bundle, bundleMap []byte
}

func encode(svid *x509svid.SVID, bundle *x509bundle.Bundle) (*contents, error) {
	if svid == nil || len(svid.Certificates) == 0 || svid.PrivateKey == nil {
		return nil, errors.New("svidfiles: no X509-SVID")
	}
	if bundle == nil || len(bundle.X509Authorities()) == 0 {
		return nil, errors.New("svidfiles: empty trust bundle")
	}
	key, err := certs.EncodeKeyPEM(svid.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("svidfiles: %w", err)
	}
	jwks, err := spiffebundle.FromX509Authorities(bundle.TrustDomain(), bundle.X509Authorities()).Marshal()
	if err != nil {
		return nil, fmt.Errorf("svidfiles: bundle map: %w", err)
	}
	bm, err := json.Marshal(map[string]map[string]json.RawMessage{
		"trust_domains": {bundle.TrustDomain().Name(): jwks},
	})
	if err != nil {
		return nil, fmt.Errorf("svidfiles: bundle map: %w", err)
	}
	return &contents{
		cert:      certs.EncodeCertsPEM(svid.Certificates...),
		key:       key,
		bundle:    certs.EncodeCertsPEM(bundle.X509Authorities()...),
		bundleMap: bm,
	}, nil
}

// verify checks that svid chains to bundle: files that would not work
// together are never written.
func verify(svid *x509svid.SVID, bundle *x509bundle.Bundle) error {
	if svid.ID.TrustDomain() != bundle.TrustDomain() {
		return fmt.Errorf("svidfiles: SVID %s is not of the bundle's trust domain %s", svid.ID, bundle.TrustDomain())
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil {
		return fmt.Errorf("svidfiles: SVID %s does not verify against the bundle: %w", svid.ID, err)
	}
	return nil
}

// Write writes svid and bundle into dir (created 0700 if missing), each
// file atomically: the bundle files first, then the key, then the chain.
// The SVID must verify against the bundle.
func Write(dir string, svid *x509svid.SVID, bundle *x509bundle.Bundle) error {
	c, err := encode(svid, bundle)
	if err != nil {
		return err
	}
	if err := verify(svid, bundle); err != nil {
		return err
	}
	return write(dir, c, nil)
}

// write writes the files of c whose bytes differ from old (all if old is
// nil).
func write(dir string, c, old *contents) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("svidfiles: %w", err)
	}
	p := PathsIn(dir)
	for _, f := range []struct {
		path     string
		new, old []byte
		mode     os.FileMode
	}{
		{p.Bundle, c.bundle, oldOf(old, func(o *contents) []byte { return o.bundle }), 0o644},
		{p.BundleMap, c.bundleMap, oldOf(old, func(o *contents) []byte { return o.bundleMap }), 0o644},
		{p.Key, c.key, oldOf(old, func(o *contents) []byte { return o.key }), 0o600},
		{p.Cert, c.cert, oldOf(old, func(o *contents) []byte { return o.cert }), 0o644},
	} {
		if f.old != nil && bytes.Equal(f.new, f.old) {
			continue
		}
		if err := certs.WriteFileAtomic(f.path, f.new, f.mode); err != nil {
			return fmt.Errorf("svidfiles: %w", err)
		}
	}
	return nil
}

func oldOf(old *contents, get func(*contents) []byte) []byte {
	if old == nil {
		return nil
	}
	return get(old)
}

// Run writes src's SVID and bundle into dir at once, and again after every
// change, until ctx is done (it then returns nil). It fails if a write
// fails or src stops serving (closed, or its SVID expired).
func Run(ctx context.Context, dir string, src Source, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	var last *contents
	for {
		ch := src.Updated() // before reading, so no change is missed
		svid, err := src.GetX509SVID()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("svidfiles: %w", err)
		}
		bundle, err := src.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("svidfiles: %w", err)
		}
		c, err := encode(svid, bundle)
		if err != nil {
			return err
		}
		if err := verify(svid, bundle); err != nil {
			// A root rotation finished before the SVID was renewed: the
			// Source renews at once; keep the files that work until then.
			log.Warn("svidfiles: not writing an SVID that does not chain to the trust bundle; waiting for the renewal", "dir", dir, "err", err)
		} else {
			if err := write(dir, c, last); err != nil {
				return err
			}
			last = c
			log.Info("svidfiles: SVID and trust bundle written", "dir", dir, "id", svid.ID.String(),
				"not_after", svid.Certificates[0].NotAfter, "roots", len(bundle.X509Authorities()))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
		}
	}
}
