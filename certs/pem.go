package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// PEM block types.
const (
	pemCertificate = "CERTIFICATE"
	pemCSR         = "CERTIFICATE REQUEST"
	pemPrivateKey  = "PRIVATE KEY"
	pemECKey       = "EC PRIVATE KEY"
)

// GenerateKey returns a new ECDSA P-256 private key.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: generate key: %w", err)
	}
	return k, nil
}

// NewCSR returns a PEM-encoded certificate request for key. It carries only
// the public key: sentry builds every other field of the certificate from the
// validated identity.
func NewCSR(key crypto.Signer) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("certs: create CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: der}), nil
}

// decodeBlock decodes the next PEM block of data. Unlike pem.Decode, which
// silently skips any text before a block, it fails when anything but
// whitespace precedes the block, and it rejects blocks with PEM headers
// (certificates and CSRs never carry them). A nil block with a nil error
// means data holds no further block; rest is then data.
func decodeBlock(data []byte) (block *pem.Block, rest []byte, err error) {
	block, rest = pem.Decode(data)
	if block == nil {
		return nil, data, nil
	}
	// The block's BEGIN line is the last one in the consumed bytes: its body
	// is base64 (no headers, checked below) and its END line cannot match.
	consumed := data[:len(data)-len(rest)]
	start := bytes.LastIndex(consumed, []byte("-----BEGIN "))
	if start < 0 || len(bytes.TrimSpace(consumed[:start])) != 0 {
		return nil, rest, errors.New("data that is not PEM before a PEM block")
	}
	if len(block.Headers) != 0 {
		return nil, rest, fmt.Errorf("PEM block %q has headers", block.Type)
	}
	return block, rest, nil
}

// ParseCSRPEM decodes exactly one PEM "CERTIFICATE REQUEST" block, parses it
// and verifies its self-signature. Text before or after the block is an error.
func ParseCSRPEM(data []byte) (*x509.CertificateRequest, error) {
	block, rest, err := decodeBlock(data)
	if err != nil {
		return nil, fmt.Errorf("certs: CSR: %w", err)
	}
	if block == nil {
		return nil, wrap(errors.New("CSR: no PEM block found"))
	}
	if block.Type != pemCSR {
		return nil, fmt.Errorf("certs: CSR: PEM block is %q, want %q", block.Type, pemCSR)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, wrap(errors.New("CSR: trailing data after the PEM block"))
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certs: CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certs: CSR signature: %w", err)
	}
	return csr, nil
}

// EncodeCertsPEM encodes certificates as consecutive PEM "CERTIFICATE" blocks.
func EncodeCertsPEM(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&buf, &pem.Block{Type: pemCertificate, Bytes: c.Raw})
	}
	return buf.Bytes()
}

// ParseCertsPEM parses one or more PEM "CERTIFICATE" blocks. Any other block
// type, garbage between blocks, or zero certificates is an error.
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := data
	for {
		var (
			block *pem.Block
			err   error
		)
		block, rest, err = decodeBlock(rest)
		if err != nil {
			return nil, fmt.Errorf("certs: certificate %d: %w", len(out), err)
		}
		if block == nil {
			break
		}
		if block.Type != pemCertificate {
			return nil, fmt.Errorf("certs: PEM block is %q, want %q", block.Type, pemCertificate)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certs: certificate %d: %w", len(out), err)
		}
		out = append(out, c)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, wrap(errors.New("trailing data that is not PEM"))
	}
	if len(out) == 0 {
		return nil, wrap(errors.New("no certificate found in PEM data"))
	}
	return out, nil
}

// EncodeKeyPEM encodes a private key as PKCS#8 PEM.
func EncodeKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certs: marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// ParseKeyPEM parses a PKCS#8 or SEC1 EC private key from PEM.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, wrap(errors.New("key: no PEM block found"))
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case pemPrivateKey:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case pemECKey:
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("certs: key: unsupported PEM block %q", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("certs: key: %w", err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("certs: key: %T cannot sign", key)
	}
	return s, nil
}

// WriteKeyFile writes a private key as PEM with mode 0600.
func WriteKeyFile(path string, key crypto.Signer) error {
	b, err := EncodeKeyPEM(key)
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, b, 0o600)
}

// WriteFileAtomic writes data to a temporary file in the same directory and
// renames it over path, so readers never see a partial file. The temporary
// file is created fresh with mode 0600 (so a key is never readable by others,
// not even for a moment) and gets mode only once its content is written and
// synced; concurrent writers of the same path do not share a temporary file.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("certs: write %s: %w", tmp, err)
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("certs: chmod %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("certs: sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("certs: close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("certs: rename %s: %w", path, err)
	}
	return nil
}
