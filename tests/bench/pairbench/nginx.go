package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The nginx variant is the anchor's floor measured on this machine, in the
// same run: fortio → nginx A (plain HTTP) → HTTPS with a client certificate
// over a keep-alive pool → nginx B (TLS 1.3, ssl_verify_client on) →
// keep-alive pool → the app. Each nginx runs a master and worker_processes
// auto (one worker per CPU), as in the anchor harness; its CPU
// and memory are summed over master and workers.

// Names of the nginx processes in the memory table.
const (
	nginxA = "nginx A, this run (master+workers)"
	nginxB = "nginx B, this run (master+workers)"
)

// findNginx returns the nginx binary to use: the flag's value, or nginx on
// PATH or in /usr/sbin; "" when there is none or the flag says "off".
func findNginx(flagValue string) string {
	switch flagValue {
	case "off":
		return ""
	case "":
		if p, err := exec.LookPath("nginx"); err == nil {
			return p
		}
		if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
			return "/usr/sbin/nginx"
		}
		return ""
	}
	return flagValue
}

// startNginx writes a throwaway ECDSA P-256 CA with a leaf for each side
// and starts nginx A (on ports["ngx-a"]) and B (on ports["ngx-b"]).
func (m *mesh) startNginx(bin string) error {
	dir := filepath.Join(m.dir, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writeNginxCerts(dir); err != nil {
		return fmt.Errorf("nginx certificates: %w", err)
	}
	p := m.ports
	common := `worker_processes auto;
user root;
pid %[1]s/%[2]s.pid;
error_log %[1]s/%[2]s.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/%[2]s.body;
  proxy_temp_path %[1]s/%[2]s.proxy;
  fastcgi_temp_path %[1]s/%[2]s.fcgi;
  uwsgi_temp_path %[1]s/%[2]s.uwsgi;
  scgi_temp_path %[1]s/%[2]s.scgi;
%[3]s
}
`
	a := fmt.Sprintf(`  upstream b { server 127.0.0.1:%d; keepalive 64; }
  server {
    listen 127.0.0.1:%d;
    location / {
      proxy_pass https://b;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_certificate %[3]s/a.crt;
      proxy_ssl_certificate_key %[3]s/a.key;
      proxy_ssl_trusted_certificate %[3]s/ca.crt;
      proxy_ssl_verify on;
      proxy_ssl_name b;
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_session_reuse on;
    }
  }`, p["ngx-b"], p["ngx-a"], dir)
	b := fmt.Sprintf(`  upstream app { server 127.0.0.1:%d; keepalive 64; }
  server {
    listen 127.0.0.1:%d ssl;
    ssl_certificate %[3]s/b.crt;
    ssl_certificate_key %[3]s/b.key;
    ssl_client_certificate %[3]s/ca.crt;
    ssl_verify_client on;
    ssl_protocols TLSv1.3;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }`, p["app-http"], p["ngx-b"], dir)
	if os.Geteuid() != 0 {
		common = strings.Replace(common, "user root;\n", "", 1)
	}
	for _, side := range []struct{ name, server string }{{"ngx-a", a}, {"ngx-b", b}} {
		conf := filepath.Join(dir, side.name+".conf")
		if err := os.WriteFile(conf, []byte(fmt.Sprintf(common, dir, side.name, side.server)), 0o644); err != nil {
			return err
		}
		if err := m.spawn(side.name, bin, "-e", filepath.Join(dir, side.name+".error.log"),
			"-p", dir, "-c", conf, "-g", "daemon off;"); err != nil {
			return err
		}
	}
	return nil
}

// nginxPIDs is the master and its workers.
func nginxPIDs(master int) []int {
	pids := []int{master}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f := statFields(pid)
		if len(f) > 1 && f[1] == strconv.Itoa(master) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func treeCPU(master int) float64 {
	var s float64
	for _, pid := range nginxPIDs(master) {
		s += cpuSeconds(pid)
	}
	return s
}

func treeStatus(master int) (rssMB, anonMB float64, err error) {
	for _, pid := range nginxPIDs(master) {
		r, a, e := readStatus(pid)
		if e != nil {
			return 0, 0, e
		}
		rssMB += r
		anonMB += a
	}
	return rssMB, anonMB, nil
}

func writeNginxCerts(dir string) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pairbench nginx CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, _ := x509.ParseCertificate(caDER)
	if err := writePEM(filepath.Join(dir, "ca.crt"), "CERTIFICATE", caDER); err != nil {
		return err
	}
	for i, name := range []string{"a", "b"} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: name},
			DNSNames: []string{name}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		kb, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return err
		}
		if err := writePEM(filepath.Join(dir, name+".crt"), "CERTIFICATE", der); err != nil {
			return err
		}
		if err := writePEM(filepath.Join(dir, name+".key"), "EC PRIVATE KEY", kb); err != nil {
			return err
		}
	}
	return nil
}

func writePEM(path, typ string, der []byte) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if b == nil {
		return errors.New("pem encode")
	}
	return os.WriteFile(path, b, 0o600)
}
