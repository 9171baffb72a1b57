package sentry_test

import (
	"strings"
	"testing"

	"github.com/meshd/meshd/sentry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine they started is
// still running after the last one.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestParseServerNames(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	got, err := sentry.ParseServerNames([]string{"meshd-system/controlplane=meshd-controlplane.meshd-system.svc,127.0.0.1", "shop/web=::1"}, td)
	if err != nil {
		t.Fatal(err)
	}
	if n := got["spiffe://cluster.local/ns/meshd-system/controlplane"]; len(n) != 2 || n[1] != "127.0.0.1" {
		t.Errorf("names %v", got)
	}
	for _, bad := range []string{"controlplane=x.svc", "meshd-system/controlplane", "meshd-system/control.plane=x",
		"a/b=*.svc", "a/b=Upper.svc", "a/b=", "a/b=x,,y", "a/b=-x.svc", "/b=x"} {
		if _, err := sentry.ParseServerNames([]string{bad}, td); err == nil || !strings.Contains(err.Error(), "--server-name") {
			t.Errorf("%q: %v, want an error naming --server-name", bad, err)
		}
	}
}
