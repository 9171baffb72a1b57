package proxy

import (
	"errors"
	"net/http"
	"strings"

	"github.com/meshd/meshd/proxy/route"
)

// serveOutbound is the app-facing HTTP handler: the API token first, when
// one is set.
func (p *Proxy) serveOutbound(w http.ResponseWriter, r *http.Request) {
	if p.apiToken != nil && !p.checkAPIToken(w, r, false) {
		return
	}
	p.serveAPI(w, r)
}

// serveAPI serves the app-facing HTTP API: health, metadata, invoke.
func (p *Proxy) serveAPI(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		if _, ok := r.Header[route.HeaderAppID]; !ok && (r.RequestURI == "" || r.RequestURI[0] == '/') {
			switch r.URL.Path {
			case "/v1.0/healthz", "/v1.0/healthz/outbound":
				p.serveHealthz(w)
				return
			case "/v1.0/healthz/app":
				p.serveAppHealthz(w)
				return
			case "/v1.0/metadata":
				if p.Metadata != nil {
					p.Metadata.ServeHTTP(w, r)
					return
				}
			}
		}
	}
	if r.Method == http.MethodPut && p.Metadata != nil && strings.HasPrefix(r.URL.Path, "/v1.0/metadata/") {
		if _, ok := r.Header[route.HeaderAppID]; !ok && (r.RequestURI == "" || r.RequestURI[0] == '/') {
			p.Metadata.ServeHTTP(w, r)
			return
		}
	}
	if up, ok := r.Header["Upgrade"]; ok && r.ProtoMajor == 1 && upgradeAsked(r.Header["Connection"], up) {
		writeError(w, false, http.StatusNotImplemented, ErrCodeUpgrade,
			"proxy: protocol upgrades ("+strings.Join(up, ", ")+") are not carried between sidecars; "+
				"use HTTP streaming (server-sent events, chunked bodies) or gRPC streams")
		return
	}
	p.invoke(w, r, false)
}

// upgradeAsked reports whether a request asks to switch protocols
// (Connection: upgrade, RFC 9110 §7.8) to anything but h2c. An h2c upgrade
// is ignored, as RFC 9113 allows: the request is served over HTTP/1.1.
func upgradeAsked(conn, up []string) bool {
	asked := false
	for _, v := range conn {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				asked = true
			}
		}
	}
	if !asked {
		return false
	}
	for _, v := range up {
		for tok := range strings.SplitSeq(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" && !strings.EqualFold(tok, "h2c") {
				return true
			}
		}
	}
	return false
}

func (p *Proxy) serveHealthz(w http.ResponseWriter) {
	if p.Ready() {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeError(w, false, http.StatusServiceUnavailable, ErrCodeNotReady, "sidecar is not ready: no workload certificate yet")
}

// serveAppHealthz answers 204 while the sidecar is ready and its app is
// healthy (always, without app health checks), 503 otherwise: the endpoint
// discovery backends register as the instance's health check (Consul).
func (p *Proxy) serveAppHealthz(w http.ResponseWriter) {
	if !p.Ready() {
		p.serveHealthz(w)
		return
	}
	if p.cfg.AppHealth != nil && !p.cfg.AppHealth.Healthy() {
		writeError(w, false, http.StatusServiceUnavailable, ErrCodeAppUnhealthy, "app "+p.cfg.Identity.AppID+" is not in a healthy state")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Ready reports whether the sidecar can make calls: it has a workload
// certificate (or runs with --insecure).
func (p *Proxy) Ready() bool {
	if p.cfg.Ready != nil {
		return p.cfg.Ready()
	}
	if p.cfg.Insecure {
		return true
	}
	_, err := p.cfg.SVIDSource.GetX509SVID()
	return err == nil
}

// invoke routes r to its target app.
func (p *Proxy) invoke(w http.ResponseWriter, r *http.Request, isGRPC bool) {
	rt, err := route.FromRequest(r, p.cfg.Identity.Namespace)
	if err != nil {
		p.errorTrace(w, r)
		switch {
		case errors.Is(err, route.ErrNoTarget):
			if path, _ := route.PathQuery(r); isDaprAPIPath(path) && !strings.HasPrefix(path, "/v1.0/invoke") {
				// /v1.0/state/..., /v1.0/publish/...: not a missing app ID.
				writeNotSupported(w, isGRPC, "Dapr's "+r.Method+" "+path+" API")
				return
			}
			writeError(w, isGRPC, http.StatusNotFound, ErrCodeNoAppID, err.Error())
		default:
			writeError(w, isGRPC, http.StatusBadRequest, ErrCodeMalformed, err.Error())
		}
		return
	}
	p.forward(w, r, &rt, isGRPC)
}
