package grpcxds

import (
	"errors"
	"fmt"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshd/meshd/certs"
)

// Defaults of Options.
const (
	// DefaultCertProviderInstance is the key of the certificate provider
	// instance in the client's bootstrap (certificate_providers) that holds
	// the client's SVID and the trust bundle.
	DefaultCertProviderInstance = "meshd"
	// DefaultConnectTimeout bounds the TCP and TLS connect to a sidecar.
	DefaultConnectTimeout = 5 * time.Second
)

// Certificate names passed to the certificate provider. grpc-go's
// file_watcher plugin ignores them; they say which half is which to a
// reader and to other providers.
const (
	IdentityCertName = "default"
	RootCertName     = "ROOTCA"
)

// Options tune the resources. The zero value picks the defaults.
type Options struct {
	// CertProviderInstance names the bootstrap's certificate provider
	// instance ("" = DefaultCertProviderInstance).
	CertProviderInstance string
	// ConnectTimeout of the Cluster (0 = DefaultConnectTimeout).
	ConnectTimeout time.Duration
}

// Resources are the resources of one app for proxyless gRPC clients.
type Resources struct {
	Listener *listenerv3.Listener
	Route    *routev3.RouteConfiguration
	Cluster  *clusterv3.Cluster
}

// Name is the name of every resource of app in namespace ns: "{app}.{ns}",
// what a client dials as xds:///{app}.{ns}.
func Name(app, ns string) string { return app + "." + ns }

// Build returns the Listener, RouteConfiguration and Cluster of app in
// namespace ns of trust domain td.
func Build(app, ns, td string, opts Options) (*Resources, error) {
	l, err := Listener(app, ns)
	if err != nil {
		return nil, err
	}
	r, err := RouteConfiguration(app, ns)
	if err != nil {
		return nil, err
	}
	c, err := Cluster(app, ns, td, opts)
	if err != nil {
		return nil, err
	}
	return &Resources{Listener: l, Route: r, Cluster: c}, nil
}

// ads is the config source "over the same ADS stream".
func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

// checkName validates app and ns as meshd names (the same rules as the
// SPIFFE ID's segments).
func checkName(app, ns string) error {
	if err := certs.ValidateAppID(app); err != nil {
		return fmt.Errorf("grpcxds: %w", err)
	}
	if err := certs.ValidateNamespace(ns); err != nil {
		return fmt.Errorf("grpcxds: %w", err)
	}
	return nil
}

// validator is what every generated resource implements.
type validator interface{ ValidateAll() error }

func validate(kind, name string, m validator) error {
	if err := m.ValidateAll(); err != nil {
		return fmt.Errorf("grpcxds: %s %s: %w", kind, name, err)
	}
	return nil
}

func anyOf(m proto.Message) (*anypb.Any, error) {
	a, err := anypb.New(m)
	if err != nil {
		return nil, fmt.Errorf("grpcxds: %w", err)
	}
	return a, nil
}

// Listener is the API listener grpc-go's xDS resolver asks for when a client
// dials xds:///{app}.{ns}: the HTTP connection manager with the router
// filter, its routes from RDS over ADS.
func Listener(app, ns string) (*listenerv3.Listener, error) {
	if err := checkName(app, ns); err != nil {
		return nil, err
	}
	name := Name(app, ns)
	router, err := anyOf(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	hcm := &hcmv3.HttpConnectionManager{
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    ads(),
			RouteConfigName: name,
		}},
		// grpc-go requires the router as the last HTTP filter.
		HttpFilters: []*hcmv3.HttpFilter{{
			Name:       wellknown.Router,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router},
		}},
	}
	if err := validate("HttpConnectionManager", name, hcm); err != nil {
		return nil, err
	}
	a, err := anyOf(hcm)
	if err != nil {
		return nil, err
	}
	l := &listenerv3.Listener{Name: name, ApiListener: &listenerv3.ApiListener{ApiListener: a}}
	if err := validate("Listener", name, l); err != nil {
		return nil, err
	}
	return l, nil
}

// RouteConfiguration sends every call to {app}.{ns} (whatever its
// /pkg.Service/Method) to the Cluster of the same name.
func RouteConfiguration(app, ns string) (*routev3.RouteConfiguration, error) {
	if err := checkName(app, ns); err != nil {
		return nil, err
	}
	name := Name(app, ns)
	rc := &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    name,
			Domains: []string{name},
			Routes: []*routev3.Route{{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name},
				}},
			}},
		}},
	}
	if err := validate("RouteConfiguration", name, rc); err != nil {
		return nil, err
	}
	return rc, nil
}

// Cluster is the EDS cluster of {app}.{ns} (endpoints in the
// ClusterLoadAssignment of the same name, over ADS), balanced round robin,
// whose transport socket makes the client speak mTLS with the SVID of the
// certificate provider instance and accept only a server certificate that
// chains to the instance's roots and carries the URI SAN
// spiffe://{td}/ns/{ns}/{app}.
func Cluster(app, ns, td string, opts Options) (*clusterv3.Cluster, error) {
	if err := checkName(app, ns); err != nil {
		return nil, err
	}
	id, err := certs.NewIdentity(td, ns, app)
	if err != nil {
		return nil, fmt.Errorf("grpcxds: %w", err)
	}
	inst := opts.CertProviderInstance
	if inst == "" {
		inst = DefaultCertProviderInstance
	}
	timeout := opts.ConnectTimeout
	switch {
	case timeout == 0:
		timeout = DefaultConnectTimeout
	case timeout < 0:
		return nil, errors.New("grpcxds: negative ConnectTimeout")
	}
	name := Name(app, ns)
	utc := &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		AlpnProtocols: []string{"h2"},
		TlsCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{
			InstanceName: inst, CertificateName: IdentityCertName,
		},
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{
			ValidationContext: &tlsv3.CertificateValidationContext{
				CaCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{
					InstanceName: inst, CertificateName: RootCertName,
				},
				// grpc-go reads match_subject_alt_names (not the typed
				// variant, which it ignores: an empty matcher list would
				// accept any SAN) and matches it against every SAN of the
				// leaf; an exact SPIFFE ID can only match its URI SAN.
				MatchSubjectAltNames: []*matcherv3.StringMatcher{{ //nolint:staticcheck // the field grpc-go reads
					MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id.String()},
				}},
			},
		},
	}}
	if err := validate("UpstreamTlsContext", name, utc); err != nil {
		return nil, err
	}
	ts, err := anyOf(utc)
	if err != nil {
		return nil, err
	}
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads(), ServiceName: name},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		ConnectTimeout:       durationpb.New(timeout),
		TransportSocket: &corev3.TransportSocket{
			Name:       wellknown.TransportSocketTLS,
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: ts},
		},
	}
	if err := validate("Cluster", name, c); err != nil {
		return nil, err
	}
	return c, nil
}
