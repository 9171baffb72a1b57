package proxy

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
	"unsafe"

	"github.com/meshd/meshd/proxy/route"
	"github.com/meshd/meshd/telemetry/tracing"
)

// HeaderAPIToken carries Dapr's API token: from the app to its sidecar
// (DAPR_API_TOKEN) and from the sidecar to its app (APP_API_TOKEN).
const HeaderAPIToken = "Dapr-Api-Token"

// apiToken is the app's API token (DAPR_API_TOKEN), kept as its SHA-256 so
// that a compare takes the same time whatever the length of the guess.
type apiToken struct {
	sum [sha256.Size]byte
}

func newAPIToken(tok string) *apiToken {
	if tok == "" {
		return nil
	}
	return &apiToken{sum: sha256.Sum256([]byte(tok))}
}

// matches reports, in constant time, whether v is the token.
func (t *apiToken) matches(v string) bool {
	// A read-only view of v's bytes: no copy on the per-call path.
	got := sha256.Sum256(unsafe.Slice(unsafe.StringData(v), len(v)))
	return subtle.ConstantTimeCompare(got[:], t.sum[:]) == 1
}

// tokenExempt reports whether r may skip the API token: daprd's health
// endpoints (GET /v1.0/healthz and /v1.0/healthz/outbound) and meshd's
// /v1.0/healthz/app, which Consul's health check polls.
func tokenExempt(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	// A health path with dapr-app-id, or in proxy form, is a call to
	// another app.
	if _, ok := r.Header[route.HeaderAppID]; ok || r.RequestURI != "" && r.RequestURI[0] != '/' {
		return false
	}
	switch r.URL.Path {
	case "/v1.0/healthz", "/v1.0/healthz/outbound", "/v1.0/healthz/app":
		return true
	}
	return false
}

// checkAPIToken enforces the app's API token on an app-facing request: one
// dapr-api-token header holding it, else 401 ERR_API_TOKEN (gRPC
// Unauthenticated) and false. The header is removed: it never leaves the
// sidecar. The token is never logged nor echoed.
func (p *Proxy) checkAPIToken(w http.ResponseWriter, r *http.Request, isGRPC bool) bool {
	v, ok := r.Header[HeaderAPIToken]
	if ok {
		delete(r.Header, HeaderAPIToken)
	}
	if tokenExempt(r) {
		return true
	}
	if len(v) == 1 && p.apiToken.matches(v[0]) {
		return true
	}
	msg := "proxy: missing dapr-api-token: this sidecar requires the app's API token (DAPR_API_TOKEN)"
	if ok {
		msg = "proxy: invalid dapr-api-token"
	}
	p.errorTrace(w, r)
	writeError(w, isGRPC, http.StatusUnauthorized, ErrCodeAPIToken, msg)
	return false
}

// errorTrace puts a traceparent on an answer the sidecar gives before the
// call is forwarded (error paths only), so that every answer names a trace.
func (p *Proxy) errorTrace(w http.ResponseWriter, r *http.Request) {
	if tp := p.tracer.ErrorTraceparent(r.Header); tp != nil {
		w.Header()[tracing.HeaderTraceparent] = tp
	}
}

// daprAPIPrefixes start the paths of Dapr's HTTP building-block APIs.
var daprAPIPrefixes = []string{"/v1.0/", "/v1.0-alpha1/", "/v1.0-alpha2/", "/v1.0-beta1/"}

// isDaprAPIPath reports whether p is a path of Dapr's HTTP API meshd does
// not serve (state, pub/sub, bindings, actors, secrets, ...).
func isDaprAPIPath(p string) bool {
	for _, pre := range daprAPIPrefixes {
		if strings.HasPrefix(p, pre) {
			return true
		}
	}
	return false
}

// writeNotSupported answers a call of a Dapr API meshd does not have.
func writeNotSupported(w http.ResponseWriter, isGRPC bool, what string) {
	writeError(w, isGRPC, http.StatusNotImplemented, ErrCodeNotSupported,
		"meshd does not implement "+what+": it serves Dapr's service invocation, health and metadata APIs only")
}
