package sidecar

import (
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/proxy"
)

// publicHealth answers the kubelet's probes on --public-port (daprd's
// --dapr-public-port): the app-facing ports bind 127.0.0.1, which a probe of
// the pod IP cannot reach. It serves only /v1.0/healthz and
// /v1.0/healthz/outbound, with the answers of the app-facing port: 204 once
// the sidecar holds its certificate and serves, 503 before.
type publicHealth struct {
	p atomic.Pointer[proxy.Proxy]
}

func (h *publicHealth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	switch r.URL.Path {
	case "/v1.0/healthz", "/v1.0/healthz/outbound":
	default:
		http.NotFound(w, r)
		return
	}
	if p := h.p.Load(); p != nil && p.Ready() {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write([]byte(`{"errorCode":"` + proxy.ErrCodeNotReady + `","message":"sidecar is not ready"}`))
}

// startPublic serves h on l from now on (the probes must get their 503
// while the sidecar waits for its certificate, before the run phase), until
// the returned stop.
func startPublic(l net.Listener, h http.Handler) (stop func()) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	return func() {
		_ = srv.Close()
		<-done
	}
}
