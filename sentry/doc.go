// Package sentry is meshd's certificate authority service: the gRPC API
// meshd.sentry.v1.CA over TLS (SignCertificate, WatchTrustBundle), the health
// endpoint, and the process lifecycle around the CA in package sentry/ca.
//
// SignCertificate checks, in this order, and answers with these codes:
//
//   - the identity (app ID without dots, at most 64 characters, non-empty
//     namespace, valid trust domain): InvalidArgument
//   - the trust domain is sentry's own: PermissionDenied otherwise (the
//     request is well formed, but asks for an identity outside this CA's
//     authority, like a token for another app)
//   - the token: Unauthenticated when missing, malformed, forged or expired;
//     PermissionDenied when genuine but for another identity
//   - the CSR (PEM, signature, ECDSA P-256, asks for nothing): InvalidArgument
//
// Every refusal is logged; nothing is signed for a refused request. The
// certificate is built from the validated identity and the CSR's public key
// alone.
package sentry
