package certs

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzParseCSRPEM: ParseCSRPEM must never panic and must never return a CSR
// whose self-signature does not verify.
func FuzzParseCSRPEM(f *testing.F) {
	_, csr := validCSR(f)
	_, csr2 := validCSR(f)
	ca := newTestCA(f, "example.org")
	f.Add(csr)
	f.Add(corruptCSRSignature(f, csr))
	f.Add(append(bytes.Clone(csr), csr2...))
	f.Add(append([]byte("x\n"), csr...))
	f.Add(bytes.ReplaceAll(csr, []byte("\n"), []byte("\r\n")))
	f.Add(EncodeCertsPEM(ca.root))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nKey: v\n\nMAA=\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ParseCSRPEM(data)
		if err != nil {
			if got != nil {
				t.Fatal("CSR returned with an error")
			}
			if !strings.HasPrefix(err.Error(), "certs: ") {
				t.Fatalf("error without package prefix: %v", err)
			}
			return
		}
		if got == nil {
			t.Fatal("nil CSR without an error")
		}
		if err := got.CheckSignature(); err != nil {
			t.Fatalf("returned a CSR whose signature does not verify: %v", err)
		}
		if got.PublicKey == nil {
			t.Fatal("returned a CSR without a public key")
		}
	})
}

// FuzzParseIdentity: ParseIdentity must never panic; what it accepts is a
// valid workload identity that prints back exactly as its input.
func FuzzParseIdentity(f *testing.F) {
	for _, s := range []string{
		"spiffe://cluster.local/ns/default/orders",
		"spiffe://example.org/ns/a/b",
		"spiffe://cluster.local/ns/default/orders.v1",
		"spiffe://cluster.local/ns//orders",
		"spiffe://cluster.local/ns/default/orders/",
		"spiffe://cluster.local/ns/default/..",
		"spiffe://cluster.local/ns/default/" + strings.Repeat("a", 65),
		"https://cluster.local/ns/default/orders",
		"spiffe://user@td:80/ns/a/b?q#f",
		"spiffe://td/ns/a/%41",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseIdentity(s)
		if err != nil {
			if id != (Identity{}) {
				t.Fatalf("non-zero identity %+v with error %v", id, err)
			}
			if !strings.HasPrefix(err.Error(), "certs: ") {
				t.Fatalf("error without package prefix: %v", err)
			}
			return
		}
		if id.String() != s {
			t.Fatalf("ParseIdentity(%q).String() = %q", s, id.String())
		}
		if id.TrustDomain.IsZero() {
			t.Fatalf("accepted %q with an empty trust domain", s)
		}
		if err := ValidateNamespace(id.Namespace); err != nil {
			t.Fatalf("accepted %q with a bad namespace: %v", s, err)
		}
		if err := ValidateAppID(id.AppID); err != nil {
			t.Fatalf("accepted %q with a bad app ID: %v", s, err)
		}
		if strings.Contains(id.AppID, ".") || len(id.AppID) > MaxAppIDLength {
			t.Fatalf("accepted app ID %q", id.AppID)
		}
		again, err := NewIdentity(id.TrustDomain.String(), id.Namespace, id.AppID)
		if err != nil || again != id {
			t.Fatalf("NewIdentity of the parsed parts = %+v, %v; want %+v", again, err, id)
		}
	})
}

// FuzzParseCertsPEM: ParseCertsPEM must never panic; success means at least
// one parsed certificate.
//
// Seeds are kept small on purpose: the fuzzer minimizes every new input (up
// to -fuzzminimizetime, 60s by default) and minimizing kilobyte-long PEM is
// slow, so run it with e.g. -fuzzminimizetime=1000x.
func FuzzParseCertsPEM(f *testing.F) {
	ca := newTestCA(f, "example.org")
	tiny := "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"
	f.Add(EncodeCertsPEM(ca.root))
	f.Add([]byte(tiny + tiny))
	f.Add([]byte(tiny + "# comment\n" + tiny))
	f.Add([]byte(tiny + "junk"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ParseCertsPEM(data)
		if err != nil {
			if got != nil {
				t.Fatal("certificates returned with an error")
			}
			return
		}
		if len(got) == 0 {
			t.Fatal("no certificates and no error")
		}
		for i, c := range got {
			if c == nil || len(c.Raw) == 0 {
				t.Fatalf("certificate %d is empty", i)
			}
		}
	})
}
