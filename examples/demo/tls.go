package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// h2Preface is what an HTTP/2 client sends first.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// tlsRefused connects to addr with cfg and expects the server to refuse
// the client: the handshake fails, or (TLS 1.3, where the client finishes
// before the server has checked its certificate) the first read returns the
// server's alert. It returns what the refusal looked like.
func tlsRefused(ctx context.Context, addr string, cfg *tls.Config) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "handshake refused: " + err.Error(), nil
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, h2Preface); err != nil {
		return "refused: " + err.Error(), nil
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err == nil {
		return "", fmt.Errorf("the server accepted the connection and answered %d bytes", n)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "", fmt.Errorf("the server kept the connection open (%v)", err)
	}
	return "refused: " + err.Error(), nil
}

// plainRefused sends a plain HTTP request to the mTLS port.
func plainRefused(ctx context.Context, addr string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET /orders/1 HTTP/1.1\r\nHost: orders\r\ndapr-caller-app-id: frontend\r\n\r\n"); err != nil {
		return "refused: " + err.Error(), nil
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/orders/1"}})
	if err != nil {
		return "refused: " + err.Error(), nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode < 400 || strings.Contains(string(body), `"name"`) {
		return "", fmt.Errorf("plain HTTP got %s %s", resp.Status, body)
	}
	return fmt.Sprintf("GET over plain TCP → %s %q (Go's TLS server; nothing reached the app)", resp.Status, strings.TrimSpace(string(body))), nil
}

// selfSigned makes a certificate that looks like a workload certificate
// for uri but is signed by nobody the mesh trusts.
func selfSigned(uri string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	u, err := url.Parse(uri)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{Organization: []string{"forged"}},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:         []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func sha256hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
