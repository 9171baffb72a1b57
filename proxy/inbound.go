package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/policy/authz"
	"github.com/meshd/meshd/proxy/internal/h1"
	"github.com/meshd/meshd/proxy/internal/h2"
	"github.com/meshd/meshd/proxy/resiliency"
	"github.com/meshd/meshd/proxy/route"
)

// Headers stamped on every inbound call.
const (
	HeaderCallerAppID     = "Dapr-Caller-App-Id"
	HeaderCallerNamespace = "Dapr-Caller-Namespace"
	HeaderCalleeAppID     = "Dapr-Callee-App-Id"
)

type peerKey struct{}

// peerInfo is the caller identity of one connection, computed once from
// the peer certificate on the first request and shared by all its streams.
type peerInfo struct {
	conn net.Conn
	once sync.Once
	id   certs.Identity
	err  error
	// header values, shared read-only by every request of the connection
	appID, ns []string
}

func (pi *peerInfo) identity() (*peerInfo, error) {
	pi.once.Do(func() {
		tc, ok := pi.conn.(*tls.Conn)
		if !ok {
			pi.err = errors.New("proxy: inbound connection is not TLS")
			return
		}
		st := tc.ConnectionState()
		if len(st.PeerCertificates) == 0 {
			pi.err = errors.New("proxy: caller presented no certificate")
			return
		}
		id, err := x509svid.IDFromCert(st.PeerCertificates[0])
		if err != nil {
			pi.err = fmt.Errorf("proxy: caller certificate: %w", err)
			return
		}
		if pi.id, err = certs.IdentityFromID(id); err != nil {
			pi.err = fmt.Errorf("proxy: caller identity: %w", err)
			return
		}
		pi.appID, pi.ns = []string{pi.id.AppID}, []string{pi.id.Namespace}
	})
	return pi, pi.err
}

// connContext attaches a peerInfo to every internal connection.
func connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, peerKey{}, &peerInfo{conn: c})
}

// foldHasPrefix reports whether k starts with prefix (lower case, '-'
// separated) when k is read as CGI, WSGI and Rack read a header name: case
// folded and '_' taken for '-'.
func foldHasPrefix(k, prefix string) bool {
	if len(k) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := k[i]
		switch {
		case c == '_':
			c = '-'
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

// foldEqual is foldHasPrefix for the whole name.
func foldEqual(k, name string) bool { return len(k) == len(name) && foldHasPrefix(k, name) }

// stripIdentityHeaders deletes every header the caller sent that the app
// could take for one meshd stamps: any name that, case folded and with
// '_' read as '-' (CGI, WSGI and Rack fold both into HTTP_DAPR_CALLER_APP_ID),
// starts with dapr-caller- or dapr-callee-, dapr-api-token (only this
// sidecar may hand its app a token: APP_API_TOKEN), and any twin of
// Meshd-Timeout (the exact name is the caller sidecar's, read by
// inboundDeadline). Identity comes from the certificate only.
func stripIdentityHeaders(h http.Header) {
	for k := range h {
		if len(k) < len("meshd-timeout") {
			continue
		}
		switch k[0] {
		case 'D', 'd':
			if foldHasPrefix(k, "dapr-caller-") || foldHasPrefix(k, "dapr-callee-") || foldEqual(k, "dapr-api-token") {
				delete(h, k)
			}
		case 'M', 'm':
			if k != resiliency.HeaderTimeout && foldEqual(k, "meshd-timeout") {
				delete(h, k)
			}
		}
	}
}

// stripSidecarMarks deletes from an app's answer every header that marks
// an answer as a sidecar's own (Meshd-Error-Code, Meshd-Short-Circuit,
// Meshd-App-Failed), in
// any case and with '_' for '-': an app's copy would make the caller retry
// elsewhere, or proxy/daprapi map the app's answer to a sidecar error.
func stripSidecarMarks(h http.Header) {
	for k := range h {
		if len(k) >= len("meshd-error-code") && (k[0] == 'M' || k[0] == 'm') && (foldEqual(k, "meshd-error-code") || foldEqual(k, "meshd-short-circuit") || foldEqual(k, "meshd-app-failed")) {
			delete(h, k)
		}
	}
}

// serveInbound is the handler of the internal (mTLS) port.
func (p *Proxy) serveInbound(w http.ResponseWriter, r *http.Request) {
	if r.Header[HeaderCheck] != nil {
		p.serveCheck(w, r) // a caller sidecar's check, not a call
		return
	}
	isGRPC := isGRPCRequest(r)
	var o *obsWriter
	if p.observe {
		o = p.startInbound(w, r)
		defer p.endInbound(o, isGRPC)
		w = o
	}
	// 1. Identity, from the certificate only.
	var caller certs.Identity
	h := r.Header
	// Hop-by-hop headers go first, so that "Connection: Dapr-Caller-App-Id"
	// cannot remove the headers stamped below.
	cleanHopByHop(h)
	stripIdentityHeaders(h)
	if !p.cfg.Insecure {
		pi, _ := r.Context().Value(peerKey{}).(*peerInfo)
		if pi == nil {
			writeError(w, isGRPC, http.StatusForbidden, ErrCodePermissionDenied, "proxy: no caller identity")
			return
		}
		if _, err := pi.identity(); err != nil {
			writeError(w, isGRPC, http.StatusForbidden, ErrCodePermissionDenied, err.Error())
			return
		}
		caller = pi.id
		if o != nil {
			o.setCaller(caller)
		}
		h[HeaderCallerAppID] = pi.appID
		h[HeaderCallerNamespace] = pi.ns
	}
	h[HeaderCalleeAppID] = p.selfAppID
	if p.appToken != nil {
		h[HeaderAPIToken] = p.appToken
	}

	// 2. Short-circuit when the app is unhealthy: answer now, never queue.
	if p.cfg.App == nil {
		w.Header()[HeaderShortCircuit] = shortCircuitUnreachable
		writeError(w, isGRPC, http.StatusServiceUnavailable, ErrCodeNoApp, "app "+p.cfg.Identity.AppID+" has no app channel (no --app-port)")
		return
	}
	if p.cfg.AppHealth != nil && !p.cfg.AppHealth.Healthy() {
		w.Header()[HeaderShortCircuit] = shortCircuitUnhealthy
		writeError(w, isGRPC, http.StatusServiceUnavailable, ErrCodeAppUnhealthy, "app "+p.cfg.Identity.AppID+" is not in a healthy state")
		return
	}

	// The path is normalized here again because the caller is another
	// process: for a well-behaved caller it is already canonical and this
	// is the identity (and allocation-free). The string checked by policy
	// is the string sent to the app.
	rawPath, query := route.PathQuery(r)
	path, err := route.Normalize(rawPath)
	if err != nil {
		writeError(w, isGRPC, http.StatusBadRequest, ErrCodeMalformed, err.Error())
		return
	}

	// 3. Policy.
	if p.cfg.Authorizer != nil {
		proto := authz.ProtocolHTTP
		if isGRPC {
			proto = authz.ProtocolGRPC
		}
		d := p.cfg.Authorizer.Authorize(r.Context(), authz.Request{
			Caller: caller, Destination: p.self, Protocol: proto,
			Method: r.Method, Path: path, Query: query, Header: h,
		})
		if !d.Allow {
			reason := d.Reason
			if reason == "" {
				reason = "denied by policy"
			}
			writeError(w, isGRPC, http.StatusForbidden, ErrCodePermissionDenied,
				"access to app "+p.self.String()+" denied for "+caller.String()+" "+r.Method+" "+path+": "+reason)
			return
		}
	}

	// 4. Forward to the app and stream the answer back. A plain HTTP call
	// to a gRPC app goes to its AppCallback/OnInvoke.
	if p.cfg.AppCallback != nil && !isGRPC {
		ctx, cancel := inboundDeadline(r)
		defer cancel()
		p.cfg.AppCallback.Serve(w, r.WithContext(ctx), path, query)
		return
	}
	if r.ProtoMajor == 1 && r.Body != http.NoBody && r.ContentLength != 0 {
		// An HTTP/1.1 caller sidecar: let the app answer while the body
		// still streams, and drain an unread body before returning (see
		// forward).
		_ = http.NewResponseController(w).EnableFullDuplex()
		defer r.Body.Close()
	}
	req := newOutRequest(*p.cfg.App.URL(path, query))
	req.Method, req.Header, req.Body = r.Method, h, r.Body
	req.ContentLength, req.Host = r.ContentLength, p.cfg.App.Addr()
	if r.Body == http.NoBody || r.ContentLength == 0 {
		req.Body, req.ContentLength = nil, 0
	}
	ctx, cancel := inboundDeadline(r) // Meshd-Timeout from the caller sidecar
	defer cancel()
	resp, err := p.cfg.App.RoundTrip(setContext(req, ctx))
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		if ctx.Err() != nil || deadlinePassed(ctx) {
			writeError(w, isGRPC, http.StatusGatewayTimeout, ErrCodeTimeout, "app "+p.cfg.Identity.AppID+": deadline of the call passed")
			return
		}
		if p.answerBodyTimeout(w, r, isGRPC) {
			return
		}
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Op == "dial" {
			w.Header()[HeaderShortCircuit] = shortCircuitUnreachable
			writeError(w, isGRPC, http.StatusServiceUnavailable, ErrCodeAppUnhealthy, "app "+p.cfg.Identity.AppID+" is unreachable: "+err.Error())
			return
		}
		if !isGRPC && !errors.Is(err, h1.ErrRequestBody) && !errors.Is(err, h2.ErrRequestBody) {
			// The app's connection failed before any byte of its answer:
			// the caller may retry an idempotent call elsewhere.
			w.Header()[HeaderAppFailed] = appFailedNoResponse
		}
		writeError(w, isGRPC, http.StatusBadGateway, ErrCodeTransport, "app "+p.cfg.Identity.AppID+": "+err.Error())
		return
	}
	// Only a sidecar may mark an answer as its own error or as a
	// short-circuit.
	stripSidecarMarks(resp.Header)
	copyResponse(w, resp)
}
