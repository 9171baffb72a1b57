// Package certs holds meshd's workload identity primitives: SPIFFE IDs of the
// form spiffe://{trust-domain}/ns/{namespace}/{app-id}, ECDSA P-256 keys and
// certificate requests, PEM helpers, trust bundles, and the rotating identity
// Source that every mTLS configuration in meshd is built on.
//
// certs imports no other meshd package. The Source satisfies go-spiffe's
// x509svid.Source and x509bundle.Source, so it plugs straight into
// tlsconfig.MTLSServerConfig and tlsconfig.MTLSClientConfig:
//
//	src, err := certs.NewSource(ctx, fetcher, certs.SourceOptions{...})
//	srv := tlsconfig.MTLSServerConfig(src, src, tlsconfig.AuthorizeMemberOf(td))
//
// Handshakes after a rotation use the new certificate without a restart,
// because the TLS configs ask the Source on every handshake.
package certs
