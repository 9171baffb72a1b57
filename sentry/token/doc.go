// Package token defines how sentry decides whether a caller may hold the
// identity it asks a certificate for: a Validator checks a credential (a join
// token, a Kubernetes service-account token, ...) against the requested
// identity. Implementations live in sub-packages (join, kubernetes, insecure).
package token
