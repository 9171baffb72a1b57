package grpcxds

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
)

func TestBuild(t *testing.T) {
	r, err := Build("orders", "shop", "cluster.local", Options{})
	if err != nil {
		t.Fatal(err)
	}
	for kind, name := range map[string]string{
		"listener": r.Listener.GetName(), "route": r.Route.GetName(), "cluster": r.Cluster.GetName(),
	} {
		if name != "orders.shop" {
			t.Errorf("%s named %q, want orders.shop", kind, name)
		}
	}

	var hcm hcmv3.HttpConnectionManager
	if err := r.Listener.GetApiListener().GetApiListener().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	if got := hcm.GetRds().GetRouteConfigName(); got != "orders.shop" {
		t.Errorf("RDS name %q", got)
	}
	if hcm.GetRds().GetConfigSource().GetAds() == nil {
		t.Error("routes not over ADS")
	}
	if f := hcm.GetHttpFilters(); len(f) != 1 || f[0].GetName() != wellknown.Router {
		t.Errorf("http filters %v, want the router alone", f)
	}

	vh := r.Route.GetVirtualHosts()
	if len(vh) != 1 || len(vh[0].GetDomains()) != 1 || vh[0].GetDomains()[0] != "orders.shop" {
		t.Fatalf("virtual hosts %v", vh)
	}
	if got := vh[0].GetRoutes()[0].GetRoute().GetCluster(); got != "orders.shop" {
		t.Errorf("route to cluster %q", got)
	}

	c := r.Cluster
	if c.GetType() != clusterv3.Cluster_EDS || c.GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN {
		t.Errorf("cluster type %v lb %v, want EDS ROUND_ROBIN", c.GetType(), c.GetLbPolicy())
	}
	if c.GetEdsClusterConfig().GetServiceName() != "orders.shop" || c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
		t.Errorf("EDS config %v", c.GetEdsClusterConfig())
	}
	if c.GetConnectTimeout().AsDuration() != DefaultConnectTimeout {
		t.Errorf("connect timeout %v", c.GetConnectTimeout().AsDuration())
	}
	if c.GetTransportSocket().GetName() != wellknown.TransportSocketTLS {
		t.Errorf("transport socket %q", c.GetTransportSocket().GetName())
	}
	var utc tlsv3.UpstreamTlsContext
	if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(&utc); err != nil {
		t.Fatal(err)
	}
	ctc := utc.GetCommonTlsContext()
	if p := ctc.GetTlsCertificateProviderInstance(); p.GetInstanceName() != "meshd" || p.GetCertificateName() != IdentityCertName {
		t.Errorf("identity provider %v", p)
	}
	vc := ctc.GetValidationContext()
	if p := vc.GetCaCertificateProviderInstance(); p.GetInstanceName() != "meshd" || p.GetCertificateName() != RootCertName {
		t.Errorf("root provider %v", p)
	}
	sans := vc.GetMatchSubjectAltNames() //nolint:staticcheck // the field grpc-go reads
	if len(sans) != 1 || sans[0].GetExact() != "spiffe://cluster.local/ns/shop/orders" || sans[0].GetIgnoreCase() {
		t.Errorf("SAN matchers %v, want exactly spiffe://cluster.local/ns/shop/orders", sans)
	}
	if len(vc.GetMatchTypedSubjectAltNames()) != 0 {
		t.Error("typed SAN matchers set: grpc-go ignores them")
	}
	for _, m := range []validator{r.Listener, r.Route, r.Cluster} {
		if err := m.ValidateAll(); err != nil {
			t.Error(err)
		}
	}
}

func TestOptions(t *testing.T) {
	c, err := Cluster("orders", "default", "example.org", Options{CertProviderInstance: "mine", ConnectTimeout: 1500e6})
	if err != nil {
		t.Fatal(err)
	}
	var utc tlsv3.UpstreamTlsContext
	if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(&utc); err != nil {
		t.Fatal(err)
	}
	vc := utc.GetCommonTlsContext().GetValidationContext()
	if utc.GetCommonTlsContext().GetTlsCertificateProviderInstance().GetInstanceName() != "mine" ||
		vc.GetCaCertificateProviderInstance().GetInstanceName() != "mine" {
		t.Error("certificate provider instance not taken from Options")
	}
	if got := vc.GetMatchSubjectAltNames()[0].GetExact(); got != "spiffe://example.org/ns/default/orders" { //nolint:staticcheck
		t.Errorf("SAN %q", got)
	}
	if c.GetConnectTimeout().AsDuration().Milliseconds() != 1500 {
		t.Errorf("connect timeout %v", c.GetConnectTimeout().AsDuration())
	}
}

func TestBadInput(t *testing.T) {
	for _, c := range []struct {
		app, ns, td string
		opts        Options
		want        string
	}{
		{"", "default", "cluster.local", Options{}, "app"},
		{"orders.v2", "default", "cluster.local", Options{}, "app"},
		{"orders", "", "cluster.local", Options{}, "namespace"},
		{"orders", "a/b", "cluster.local", Options{}, "namespace"},
		{"orders", "default", "", Options{}, "trust domain"},
		{"orders", "default", "Bad Domain", Options{}, "trust domain"},
		{"orders", "default", "cluster.local", Options{ConnectTimeout: -1}, "negative"},
	} {
		_, err := Build(c.app, c.ns, c.td, c.opts)
		if err == nil {
			t.Errorf("Build(%q, %q, %q, %+v): no error", c.app, c.ns, c.td, c.opts)
			continue
		}
		if !strings.HasPrefix(err.Error(), "grpcxds: ") || !strings.Contains(strings.ToLower(err.Error()), c.want) {
			t.Errorf("Build(%q, %q, %q): %v, want a grpcxds error about %s", c.app, c.ns, c.td, err, c.want)
		}
	}
}
