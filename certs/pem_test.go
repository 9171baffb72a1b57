package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// validCSR returns a fresh key and its PEM CSR.
func validCSR(t testing.TB) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key := mustKey(t)
	csr, err := NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	return key, csr
}

// corruptCSRSignature flips a byte inside the signature value of a valid
// CSR; the DER stays well-formed, only the signature no longer verifies.
func corruptCSRSignature(t testing.TB, csrPEM []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(csrPEM)
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	der := bytes.Clone(block.Bytes)
	i := bytes.LastIndex(der, csr.Signature)
	if i < 0 {
		t.Fatal("signature not found in the CSR")
	}
	// The signature is SEQUENCE{INTEGER r, INTEGER s}; its last byte is the
	// low byte of s, so flipping it keeps the encoding valid.
	der[i+len(csr.Signature)-1] ^= 0x01
	return pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: der})
}

func TestNewCSRRoundTrip(t *testing.T) {
	key, csrPEM := validCSR(t)
	csr, err := ParseCSRPEM(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !key.PublicKey.Equal(csr.PublicKey) {
		t.Fatal("CSR does not carry the key's public key")
	}
	if len(csr.URIs) != 0 || len(csr.DNSNames) != 0 || csr.Subject.String() != "" {
		t.Fatal("CSR must carry only the public key")
	}
}

func TestParseCSRPEM(t *testing.T) {
	_, csr := validCSR(t)
	_, csr2 := validCSR(t)
	ca := newTestCA(t, "example.org")
	keyPEM, err := EncodeKeyPEM(mustKey(t))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(csr)
	withHeaders := pem.EncodeToMemory(&pem.Block{Type: pemCSR, Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: block.Bytes})
	truncated := pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: block.Bytes[:len(block.Bytes)-10]})
	trailingDER := pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: append(bytes.Clone(block.Bytes), 0x00)})

	tests := []struct {
		name    string
		data    []byte
		wantErr string
	}{
		{"valid", csr, ""},
		{"surrounding whitespace", append(append([]byte("\n \n"), csr...), "\n\t\n"...), ""},
		{"indented BEGIN line", append([]byte("  "), csr...), "no PEM block"},
		{"CRLF line endings", bytes.ReplaceAll(csr, []byte("\n"), []byte("\r\n")), ""},
		{"empty", nil, "no PEM block"},
		{"not PEM", []byte("hello"), "no PEM block"},
		{"DER without PEM", block.Bytes, "no PEM block"},
		{"bad base64", []byte("-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n"), "no PEM block"},
		{"missing END", bytes.Split(csr, []byte("-----END"))[0], "no PEM block"},
		{"certificate block", EncodeCertsPEM(ca.root), `PEM block is "CERTIFICATE"`},
		{"private key block", keyPEM, `PEM block is "PRIVATE KEY"`},
		{"trailing garbage", append(bytes.Clone(csr), "garbage"...), "trailing data"},
		{"two CSRs", append(bytes.Clone(csr), csr2...), "trailing data"},
		{"leading garbage", append([]byte("Certificate Request:\n"), csr...), "before a PEM block"},
		{"PEM headers", withHeaders, "has headers"},
		{"truncated DER", truncated, "certs: CSR:"},
		{"trailing data in DER", trailingDER, "certs: CSR:"},
		{"bad signature", corruptCSRSignature(t, csr), "CSR signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCSRPEM(tt.data)
			checkErr(t, err, tt.wantErr)
			if (err == nil) != (got != nil) {
				t.Fatalf("got %v with error %v", got, err)
			}
		})
	}
}

func TestParseCertsPEM(t *testing.T) {
	ca := newTestCA(t, "example.org")
	two := EncodeCertsPEM(ca.root, ca.inter)
	_, csr := validCSR(t)
	badDER := pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: []byte{0x30, 0x03, 0x02, 0x01, 0x01}})
	blocks := bytes.SplitAfter(two, []byte("-----END CERTIFICATE-----\n"))
	tests := []struct {
		name    string
		data    []byte
		want    int
		wantErr string
	}{
		{"one", EncodeCertsPEM(ca.root), 1, ""},
		{"two", two, 2, ""},
		{"blank lines between", bytes.Join(blocks, []byte("\n\n")), 2, ""},
		{"empty", nil, 0, "no certificate found"},
		{"whitespace only", []byte(" \n\t\n"), 0, "no certificate found"},
		{"garbage only", []byte("not a certificate"), 0, "trailing data"},
		{"trailing garbage", append(bytes.Clone(two), "junk"...), 0, "trailing data"},
		{"garbage between blocks", bytes.Join(blocks, []byte("# comment\n")), 0, "certificate 1: data that is not PEM"},
		{"leading garbage", append([]byte("subject=CN=root\n"), two...), 0, "certificate 0: data that is not PEM"},
		{"CSR block among certs", append(EncodeCertsPEM(ca.root), csr...), 0, `PEM block is "CERTIFICATE REQUEST"`},
		{"bad DER", badDER, 0, "certificate 0"},
		{"truncated last block", two[:len(two)-30], 0, "trailing data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCertsPEM(tt.data)
			checkErr(t, err, tt.wantErr)
			if len(got) != tt.want {
				t.Fatalf("got %d certificates, want %d", len(got), tt.want)
			}
		})
	}
	got, err := ParseCertsPEM(two)
	if err != nil || !got[0].Equal(ca.root) || !got[1].Equal(ca.inter) {
		t.Fatal("EncodeCertsPEM / ParseCertsPEM do not round-trip in order")
	}
}

func TestKeyPEM(t *testing.T) {
	key := mustKey(t)
	pkcs8, err := EncodeKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	sec1DER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	sec1 := pem.EncodeToMemory(&pem.Block{Type: pemECKey, Bytes: sec1DER})
	ca := newTestCA(t, "example.org")
	tests := []struct {
		name    string
		data    []byte
		wantErr string
	}{
		{"PKCS#8", pkcs8, ""},
		{"SEC1", sec1, ""},
		{"empty", nil, "no PEM block"},
		{"certificate", EncodeCertsPEM(ca.root), `unsupported PEM block "CERTIFICATE"`},
		{"PKCS#8 body in SEC1 block", pem.EncodeToMemory(&pem.Block{Type: pemECKey, Bytes: []byte{0x30, 0x00}}), "certs: key:"},
		{"garbage DER", pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: []byte("nope")}), "certs: key:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseKeyPEM(tt.data)
			checkErr(t, err, tt.wantErr)
			if err == nil && !key.PublicKey.Equal(got.Public()) {
				t.Fatal("parsed key differs from the encoded one")
			}
		})
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key.pem")
	// A pre-existing world-readable file is replaced, not reused.
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	key := mustKey(t)
	if err := WriteKeyFile(path, key); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseKeyPEM(data)
	if err != nil || !key.PublicKey.Equal(got.Public()) {
		t.Fatalf("key file does not hold the key: %v", err)
	}

	bundle := filepath.Join(dir, "bundle.pem")
	if err := WriteFileAtomic(bundle, []byte("roots"), 0o644); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(bundle); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("bundle file: %v mode %v, want 0644", err, fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		names := []string{}
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("directory holds %v, want only key.pem and bundle.pem (no temporary files)", names)
	}

	err = WriteFileAtomic(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600)
	if err == nil || !strings.HasPrefix(err.Error(), "certs: ") {
		t.Fatalf("write into a missing directory: %v, want a certs: error", err)
	}
	// A failed rename leaves no temporary file behind.
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(filepath.Join(sub), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(sub, "target"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sub, "target", "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(filepath.Join(sub, "target"), []byte("x"), 0o600); err == nil {
		t.Fatal("renaming over a non-empty directory succeeded")
	}
	if entries, _ := os.ReadDir(sub); len(entries) != 1 {
		t.Fatalf("failed write left %d entries in the directory, want 1", len(entries))
	}
}
