package sidecar

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestDiagnoseSentry(t *testing.T) {
	cfg := Config{AppID: "orders", Namespace: "shop", SentryAddress: "127.0.0.1:50003",
		TrustAnchorsFile: "/etc/meshd/bundle.pem", TokenFile: "/run/orders.token"}
	wrap := func(err error) error { return fmt.Errorf("certs: fetch X509-SVID: sentryclient: sign: %w", err) }
	for _, tc := range []struct {
		name  string
		err   error
		class string
		heals bool
		want  []string
	}{
		{"wrong anchors", wrap(status.Error(codes.Unavailable,
			"connection error: desc = \"transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority\"")),
			"anchors", false, []string{"/etc/meshd/bundle.pem do not verify", "bundle.pem in the --data-dir of the sentry at 127.0.0.1:50003"}},
		{"token for another app", wrap(status.Error(codes.PermissionDenied, "join: token is for spiffe://cluster.local/ns/shop/billing")),
			"denied", false, []string{"refused this sidecar's join token: join: token is for spiffe://cluster.local/ns/shop/billing",
				"app orders in namespace shop", "sentry token create --data-dir SENTRY_DATA_DIR --app-id orders --namespace shop > /run/orders.token"}},
		{"expired token", wrap(status.Error(codes.Unauthenticated, "join: token expired")), "token", false,
			[]string{"refused this sidecar's join token: join: token expired;"}},
		{"trust domain", wrap(status.Error(codes.NotFound, "sentry: trust domain \"x\" is not served here")), "trust-domain", false,
			[]string{"set --trust-domain"}},
		{"sentry down", wrap(status.Error(codes.Unavailable, "connection refused")), "unreachable", true,
			[]string{"waiting for its identity from sentry at 127.0.0.1:50003 (last attempt: "}},
		{"plain error", errors.New("context deadline exceeded"), "unreachable", true, []string{"waiting for its identity"}},
	} {
		p := diagnoseSentry(cfg, tc.err)
		if p.class != tc.class || p.heals != tc.heals {
			t.Errorf("%s: class %q heals %v, want %q %v", tc.name, p.class, p.heals, tc.class, tc.heals)
		}
		for _, w := range tc.want {
			if !strings.Contains(p.reason, w) {
				t.Errorf("%s: reason lacks %q:\n%s", tc.name, w, p.reason)
			}
		}
	}
}
