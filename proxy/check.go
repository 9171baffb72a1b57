package proxy

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/meshd/meshd/discovery"
)

// HeaderCheck marks a caller sidecar's check of an ejected endpoint (see
// PeerChecker): the callee sidecar answers it itself, never its app. A
// caller sidecar removes it from its app's calls.
const HeaderCheck = "Meshd-Check"

// checkAppTimeout bounds the callee's connect to its app for a check.
const checkAppTimeout = time.Second

var checkValue = []string{"1"}

// PeerChecker returns the discovery.Checker of this proxy's peers (for
// discovery.Cache.SetChecker): a check of an ejected endpoint is one
// request with HeaderCheck to its sidecar over the same mTLS (HTTP/2)
// transport the calls use, so it proves what a call needs: the peer
// completes a handshake with the expected SPIFFE ID, answers, and reports
// its app reachable and healthy. It passes on any answer but a
// short-circuit (a peer sidecar without checks answers as to a call:
// anything but a short-circuit shows it serving).
func (p *Proxy) PeerChecker() discovery.Checker { return peerChecker{p} }

type peerChecker struct{ p *Proxy }

func (pc peerChecker) Check(ctx context.Context, t discovery.Target, ep discovery.Endpoint) error {
	p := pc.p
	pt, err := p.peers.get(t)
	if err != nil {
		return err
	}
	req := &http.Request{
		Method:     http.MethodGet,
		URL:        &url.URL{Scheme: p.peerScheme, Host: ep.Address, Path: "/"},
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     http.Header{HeaderCheck: checkValue},
		Host:       ep.Address,
	}
	resp, err := pt.h2.RoundTrip(req.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("proxy: check of %s at %s: %w", t, ep.Address, err)
	}
	sc := resp.Header.Get(HeaderShortCircuit)
	discard(resp)
	if sc != "" {
		return fmt.Errorf("proxy: check of %s at %s: %s (%d)", t, ep.Address, sc, resp.StatusCode)
	}
	return nil
}

// serveCheck answers a caller sidecar's check (HeaderCheck) on the
// internal port: 204 when this sidecar would pass a call to its app now,
// else 503 with HeaderShortCircuit, as a call would get. Only a caller with
// a workload certificate is answered. Checks are not calls: no metrics, no
// policy, nothing reaches the app but a TCP connect.
func (p *Proxy) serveCheck(w http.ResponseWriter, r *http.Request) {
	if !p.cfg.Insecure {
		pi, _ := r.Context().Value(peerKey{}).(*peerInfo)
		if pi == nil {
			writeError(w, false, http.StatusForbidden, ErrCodePermissionDenied, "proxy: no caller identity")
			return
		}
		if _, err := pi.identity(); err != nil {
			writeError(w, false, http.StatusForbidden, ErrCodePermissionDenied, err.Error())
			return
		}
	}
	switch {
	case p.cfg.App == nil:
		w.Header()[HeaderShortCircuit] = shortCircuitUnreachable
		writeError(w, false, http.StatusServiceUnavailable, ErrCodeNoApp, "app "+p.cfg.Identity.AppID+" has no app channel (no --app-port)")
		return
	case p.cfg.AppHealth != nil && !p.cfg.AppHealth.Healthy():
		w.Header()[HeaderShortCircuit] = shortCircuitUnhealthy
		writeError(w, false, http.StatusServiceUnavailable, ErrCodeAppUnhealthy, "app "+p.cfg.Identity.AppID+" is not in a healthy state")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), checkAppTimeout)
	defer cancel()
	if err := p.cfg.App.Reachable(ctx); err != nil {
		w.Header()[HeaderShortCircuit] = shortCircuitUnreachable
		writeError(w, false, http.StatusServiceUnavailable, ErrCodeAppUnhealthy, "app "+p.cfg.Identity.AppID+" is unreachable: "+err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
