// Package join implements sentry's join tokens: short strings signed by
// sentry with an Ed25519 key kept in its data directory, each bound to one
// identity (trust domain, namespace, app ID) and an expiry.
//
// Format (all base64 is unpadded base64url, strict):
//
//	mjt1.<base64(claims JSON)>.<base64(Ed25519 signature)>
//
// The signature covers the ASCII bytes "mjt1.<base64(claims JSON)>". Claims
// are a JSON object with exactly these fields, in this order, no whitespace:
//
//	{"td":"cluster.local","ns":"default","app":"orders","iat":1700000000,"exp":1700086400,"jti":"0123456789abcdef0123456789abcdef"}
//
// Parsing is strict: the signature is verified before the claims are
// decoded, and the claims must re-encode to exactly the signed bytes (no
// unknown, duplicate or re-ordered fields). A token may be used any number
// of times until it expires, so a sidecar can renew its certificate with it.
package join
