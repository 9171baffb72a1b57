package xds_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/discovery/xds/policypb"
	"github.com/meshd/meshd/tests/harness"
	"github.com/meshd/meshd/xds"
)

func dialCP(t *testing.T, addr string, tlsCfg *tls.Config) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// sotwNames opens a state-of-the-world ADS stream claiming node ID claim,
// asks typeURL for names (none: wildcard) and returns the names of the
// first answer, or nil and the error when none comes within wait.
func sotwNames(t *testing.T, conn *grpc.ClientConn, claim, typeURL string, names []string, wait time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: claim}, TypeUrl: typeURL, ResourceNames: names}); err != nil {
		return nil, err
	}
	resp, err := st.Recv()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range resp.GetResources() {
		out = append(out, nameOf(t, typeURL, r.GetValue()))
	}
	sort.Strings(out)
	return out, nil
}

// deltaNames is sotwNames on a delta stream.
func deltaNames(t *testing.T, conn *grpc.ClientConn, claim, typeURL string, names []string, wait time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: claim}, TypeUrl: typeURL, ResourceNamesSubscribe: names}); err != nil {
		return nil, err
	}
	resp, err := st.Recv()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range resp.GetResources() {
		out = append(out, r.GetName())
	}
	sort.Strings(out)
	return out, nil
}

func nameOf(t *testing.T, typeURL string, b []byte) string {
	t.Helper()
	return resourceName(t, typeURL, b)
}

// TestVisibility: a client sees only its own namespace's apps and policy
// (plus what other namespaces export to it and the mesh-wide rules),
// whatever node ID it claims and whatever it asks for; a client without a
// mesh SVID gets nothing. State of the world and delta alike.
func TestVisibility(t *testing.T) {
	b := harness.Build(t)
	s := harness.StartSentry(t, b, "")
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy")
	writeFile(t, filepath.Join(pol, "default", "authz.rego"), allowFrontend)
	writeFile(t, filepath.Join(pol, "shop", "authz.rego"), allowFrontend)
	writeFile(t, filepath.Join(pol, "_mesh", "admin.rego"), meshAdmin)
	apps := filepath.Join(dir, "apps.yaml")
	harness.WriteStatic(t, apps,
		harness.StaticApp{AppID: "orders", Namespace: "default", Addresses: []string{"127.0.0.1:1001"}},
		harness.StaticApp{AppID: "cart", Namespace: "shop", Addresses: []string{"127.0.0.1:1002"}},
		harness.StaticApp{AppID: "catalog", Namespace: "shared", Addresses: []string{"127.0.0.1:1003"}})
	cp := harness.StartControlPlane(t, b, s, "--resolver", "static", "--resolver-config", apps,
		"--policy-dir", pol, "--export", "shared=shop")

	spy := s.Source(t, "spy", "shop")
	cpID := spiffeid.RequireFromString(harness.ControlPlaneID)
	conn := dialCP(t, cp.Addr, tlsconfig.MTLSClientConfig(spy, spy, certs.RequireServerAuth(tlsconfig.AuthorizeID(cpID))))
	clusters, cla := xds.TypeURLs[0], xds.TypeURLs[1]
	const wait = 5 * time.Second
	want := []string{"cart.shop", "catalog.shared"}
	for _, c := range []struct {
		name string
		get  func(claim, typeURL string, names []string, wait time.Duration) ([]string, error)
	}{
		{"SotW", func(claim, tu string, n []string, w time.Duration) ([]string, error) {
			return sotwNames(t, conn, claim, tu, n, w)
		}},
		{"Delta", func(claim, tu string, n []string, w time.Duration) ([]string, error) {
			return deltaNames(t, conn, claim, tu, n, w)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, claim := range []string{"", "default", "spiffe://cluster.local/ns/default/orders"} {
				got, err := c.get(claim, clusters, nil, wait)
				if err != nil || !slices.Equal(got, want) {
					t.Errorf("shop client claiming %q, all clusters: %v %v; want %v", claim, got, err, want)
				}
				got, err = c.get(claim, cla, nil, wait)
				if err != nil || !slices.Equal(got, want) {
					t.Errorf("shop client claiming %q, all endpoints: %v %v; want %v", claim, got, err, want)
				}
				got, err = c.get(claim, policypb.TypeURL, nil, wait)
				if err != nil || !slices.Equal(got, []string{"_mesh", "shop"}) {
					t.Errorf("shop client claiming %q, policies: %v %v; want [_mesh shop]", claim, got, err)
				}
			}
			// Asking by name for another namespace's resources gets nothing.
			got, err := c.get("default", cla, []string{"orders.default"}, time.Second)
			if len(got) != 0 {
				t.Errorf("shop client asking for orders.default: got %v (%v); want nothing", got, err)
			}
			got, err = c.get("default", policypb.TypeURL, []string{"default"}, time.Second)
			if len(got) != 0 {
				t.Errorf("shop client asking for default's policy: got %v (%v); want nothing", got, err)
			}
		})
	}

	t.Run("NoSVID", func(t *testing.T) {
		pemBytes, err := readBundle(s)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pemBytes)
		// Trusts the control plane, shows no certificate of its own.
		plain := dialCP(t, cp.Addr, &tls.Config{RootCAs: pool, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // the client's own check is not what is tested
		if got, err := sotwNames(t, plain, "default", clusters, nil, wait); err == nil || len(got) != 0 {
			t.Errorf("client without an SVID, SotW: got %v, err %v; want an error and nothing", got, err)
		}
		if got, err := deltaNames(t, plain, "default", clusters, nil, wait); err == nil || len(got) != 0 {
			t.Errorf("client without an SVID, delta: got %v, err %v; want an error and nothing", got, err)
		}
	})
}
