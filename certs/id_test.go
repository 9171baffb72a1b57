package certs

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestValidateAppID(t *testing.T) {
	tests := []struct {
		id      string
		wantErr string // "" = valid
	}{
		{"orders", ""},
		{"order-service_v2", ""},
		{"Orders", ""},
		{strings.Repeat("a", MaxAppIDLength), ""},
		{"", "app ID is empty"},
		{strings.Repeat("a", MaxAppIDLength+1), "longer than 64"},
		{"orders.default", "must not contain a dot"},
		{".", "must not contain a dot"},
		{"..", "must not contain a dot"},
		{"a/b", "path segment characters"},
		{"a b", "path segment characters"},
		{"a%2Fb", "path segment characters"},
		{"ordérs", "path segment characters"},
		{"a\x00b", "path segment characters"},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			checkErr(t, ValidateAppID(tt.id), tt.wantErr)
		})
	}
}

func TestValidateNamespace(t *testing.T) {
	tests := []struct {
		ns      string
		wantErr string
	}{
		{"default", ""},
		{"kube-system", ""},
		{"", "namespace is empty"},
		{"prod.eu", "must not contain a dot"},
		{"a/b", "path segment characters"},
		{"a b", "path segment characters"},
	}
	for _, tt := range tests {
		t.Run(tt.ns, func(t *testing.T) {
			checkErr(t, ValidateNamespace(tt.ns), tt.wantErr)
		})
	}
}

func TestNewIdentity(t *testing.T) {
	tests := []struct {
		name            string
		td, ns, app     string
		wantID, wantErr string
	}{
		{"valid", "cluster.local", "default", "orders", "spiffe://cluster.local/ns/default/orders", ""},
		{"td with scheme", "spiffe://example.org", "prod", "api", "spiffe://example.org/ns/prod/api", ""},
		{"empty td", "", "default", "orders", "", "trust domain"},
		{"uppercase td", "Cluster.local", "default", "orders", "", "trust domain"},
		{"td with port", "cluster.local:443", "default", "orders", "", "trust domain"},
		{"empty namespace", "cluster.local", "", "orders", "", "namespace is empty"},
		{"dotted namespace", "cluster.local", "a.b", "orders", "", "must not contain a dot"},
		{"empty app", "cluster.local", "default", "", "", "app ID is empty"},
		{"dotted app", "cluster.local", "default", "orders.default", "", "must not contain a dot"},
		{"long app", "cluster.local", "default", strings.Repeat("x", 65), "", "longer than 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := NewIdentity(tt.td, tt.ns, tt.app)
			checkErr(t, err, tt.wantErr)
			if err == nil && id.String() != tt.wantID {
				t.Fatalf("ID = %q, want %q", id.String(), tt.wantID)
			}
			if err != nil && id != (Identity{}) {
				t.Fatalf("error with a non-zero identity %+v", id)
			}
		})
	}
}

func TestParseIdentity(t *testing.T) {
	tests := []struct {
		in      string
		want    Identity // checked when wantErr is ""
		wantErr string
	}{
		{"spiffe://cluster.local/ns/default/orders", Identity{spiffeid.RequireTrustDomainFromString("cluster.local"), "default", "orders"}, ""},
		{"spiffe://example.org/ns/kube-system/dns_v2", Identity{spiffeid.RequireTrustDomainFromString("example.org"), "kube-system", "dns_v2"}, ""},
		{"", Identity{}, "SPIFFE ID"},
		{"https://cluster.local/ns/default/orders", Identity{}, "scheme"},
		{"SPIFFE://cluster.local/ns/default/orders", Identity{}, "scheme"},
		{"cluster.local/ns/default/orders", Identity{}, "scheme"},
		{"spiffe://cluster.local", Identity{}, "not of the form"},
		{"spiffe://cluster.local/ns/default", Identity{}, "not of the form"},
		{"spiffe://cluster.local/ns/default/orders/extra", Identity{}, "not of the form"},
		{"spiffe://cluster.local/namespace/default/orders", Identity{}, "not of the form"},
		{"spiffe://cluster.local/sa/default/orders", Identity{}, "not of the form"},
		{"spiffe://cluster.local/ns//orders", Identity{}, "empty segments"},
		{"spiffe://cluster.local/ns/default/", Identity{}, "trailing slash"},
		{"spiffe://cluster.local/ns/default/orders/", Identity{}, "trailing slash"},
		{"spiffe://cluster.local/ns/a.b/orders", Identity{}, "must not contain a dot"},
		{"spiffe://cluster.local/ns/default/orders.v1", Identity{}, "must not contain a dot"},
		{"spiffe://cluster.local/ns/default/..", Identity{}, "dot segments"},
		{"spiffe://cluster.local/ns/default/" + strings.Repeat("a", 65), Identity{}, "longer than 64"},
		{"spiffe://cluster.local/ns/default/%41", Identity{}, "path segment characters"},
		{"spiffe://cluster.local/ns/default/orders?x=1", Identity{}, "path segment characters"},
		{"spiffe://cluster.local/ns/default/orders#f", Identity{}, "path segment characters"},
		{"spiffe://user@cluster.local/ns/default/orders", Identity{}, "trust domain characters"},
		{"spiffe://cluster.local:8443/ns/default/orders", Identity{}, "trust domain characters"},
		{"spiffe://Cluster.Local/ns/default/orders", Identity{}, "trust domain characters"},
		{" spiffe://cluster.local/ns/default/orders", Identity{}, "scheme"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseIdentity(tt.in)
			checkErr(t, err, tt.wantErr)
			if err != nil {
				return
			}
			if got != tt.want {
				t.Fatalf("ParseIdentity(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if got.String() != tt.in {
				t.Fatalf("String() = %q, want the input %q back", got.String(), tt.in)
			}
			back, err := IdentityFromID(got.ID())
			if err != nil || back != got {
				t.Fatalf("IdentityFromID(ID()) = %+v, %v; want %+v", back, err, got)
			}
		})
	}
}

func TestIdentityFromZeroID(t *testing.T) {
	_, err := IdentityFromID(spiffeid.ID{})
	checkErr(t, err, "SPIFFE ID is empty")
}

func TestIdentityIsAMapKey(t *testing.T) {
	a, err := NewIdentity("cluster.local", "default", "orders")
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseIdentity("spiffe://cluster.local/ns/default/orders")
	if err != nil {
		t.Fatal(err)
	}
	m := map[Identity]int{a: 1}
	if m[b] != 1 {
		t.Fatal("identities built two ways are not equal map keys")
	}
	if (Identity{}).ID() != (spiffeid.ID{}) || (Identity{}).String() != "" {
		t.Fatal("the zero identity must map to the zero SPIFFE ID")
	}
}

// checkErr fails unless err matches wantErr ("" = no error): a package-
// prefixed error containing wantErr.
func checkErr(t *testing.T, err error, wantErr string) {
	t.Helper()
	switch {
	case wantErr == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case wantErr != "" && err == nil:
		t.Fatalf("no error, want one containing %q", wantErr)
	case err != nil && (!strings.HasPrefix(err.Error(), "certs: ") || !strings.Contains(err.Error(), wantErr)):
		t.Fatalf("error %q, want prefix \"certs: \" and %q", err, wantErr)
	}
}
