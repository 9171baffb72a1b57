package proxy

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// Error codes in the JSON error body.
const (
	ErrCodeMalformed        = "ERR_MALFORMED_REQUEST"     // 400
	ErrCodePermissionDenied = "ERR_PERMISSION_DENIED"     // 403
	ErrCodeNoAppID          = "ERR_DIRECT_INVOKE"         // 404 (Dapr's code for it)
	ErrCodeTransport        = "ERR_DIRECT_INVOKE"         // 502
	ErrCodeNoEndpoint       = "ERR_NO_HEALTHY_ENDPOINT"   // 503
	ErrCodeAppUnhealthy     = "ERR_APP_UNHEALTHY"         // 503 (short-circuit)
	ErrCodeNoApp            = "ERR_APP_CHANNEL"           // 503, sidecar has no app
	ErrCodeTimeout          = "ERR_TIMEOUT"               // 504
	ErrCodeUpgrade          = "ERR_UPGRADE_NOT_SUPPORTED" // 501: WebSocket and other upgrades
	ErrCodeNotReady         = "ERR_NOT_READY"             // 503: no identity yet (healthz, calls)
	ErrCodeHeadersTooLarge  = "ERR_HEADERS_TOO_LARGE"     // 431: too many header fields, or too many bytes
	ErrCodeBodyTimeout      = "ERR_BODY_TIMEOUT"          // 408: the request body stalled or trickled
	ErrCodeAPIToken         = "ERR_API_TOKEN"             // 401: missing or wrong dapr-api-token
	ErrCodeNotSupported     = "ERR_NOT_SUPPORTED"         // 501: a Dapr API meshd does not implement
)

// HeaderErrorCode marks an answer the sidecar wrote itself (never the
// app's): its value is the errorCode of the JSON body. proxy/daprapi relies
// on it to tell a sidecar error from an app's error status.
const HeaderErrorCode = "Meshd-Error-Code"

// HeaderShortCircuit marks an answer the callee sidecar gave without
// contacting its app; the caller reports the endpoint as failing and may
// retry elsewhere.
const HeaderShortCircuit = "Meshd-Short-Circuit"

// Values of HeaderShortCircuit.
const (
	ShortCircuitUnhealthy   = "app-unhealthy"
	ShortCircuitUnreachable = "app-unreachable"
)

// HeaderAppFailed marks a callee sidecar's 502 ERR_DIRECT_INVOKE given
// because its app's connection failed (reset, closed) before any byte of
// the app's answer: the request may have reached the app, nothing came
// back. Its one value is AppFailedNoResponse. The caller sidecar retries
// an idempotent call on another endpoint, as when its own connection to a
// peer breaks; it never retries another method. Set only on HTTP calls.
const HeaderAppFailed = "Meshd-App-Failed"

// AppFailedNoResponse is the value of HeaderAppFailed.
const AppFailedNoResponse = "no-response"

var (
	appFailedNoResponse     = []string{AppFailedNoResponse}
	shortCircuitUnhealthy   = []string{ShortCircuitUnhealthy}
	shortCircuitUnreachable = []string{ShortCircuitUnreachable}
	jsonContentType         = []string{"application/json"}
	grpcContentType         = []string{"application/grpc"}
)

type errorBody struct {
	ErrorCode string `json:"errorCode"`
	Message   string `json:"message"`
}

// grpcCode maps our HTTP status codes to gRPC codes.
func grpcCode(status int) int {
	switch status {
	case http.StatusBadRequest:
		return 3 // InvalidArgument
	case http.StatusUnauthorized:
		return 16 // Unauthenticated: missing or wrong API token
	case http.StatusForbidden:
		return 7 // PermissionDenied
	case http.StatusNotFound, http.StatusNotImplemented:
		return 12 // Unimplemented: no app id given, an upgrade
	case http.StatusGatewayTimeout, http.StatusRequestTimeout:
		return 4 // DeadlineExceeded
	case http.StatusRequestHeaderFieldsTooLarge:
		return 8 // ResourceExhausted
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return 14 // Unavailable
	}
	return 13 // Internal
}

// writeError answers with a JSON error body, or, to a gRPC caller, with a
// trailers-only gRPC status.
func writeError(w http.ResponseWriter, isGRPC bool, status int, code, msg string) {
	h := w.Header()
	if isGRPC {
		h["Content-Type"] = grpcContentType
		h.Set("Grpc-Status", strconv.Itoa(grpcCode(status)))
		h.Set("Grpc-Message", encodeGRPCMessage(code+": "+msg))
		w.WriteHeader(http.StatusOK)
		return
	}
	b, _ := json.Marshal(errorBody{ErrorCode: code, Message: msg})
	h["Content-Type"] = jsonContentType
	h[HeaderErrorCode] = []string{code}
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// encodeGRPCMessage percent-encodes a grpc-message value (gRPC HTTP/2 spec).
func encodeGRPCMessage(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= ' ' && c <= '~' && c != '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte("0123456789ABCDEF"[c>>4])
		b.WriteByte("0123456789ABCDEF"[c&15])
	}
	return b.String()
}

func isGRPCRequest(r *http.Request) bool {
	ct := r.Header["Content-Type"]
	return len(ct) == 1 && strings.HasPrefix(ct[0], "application/grpc") && r.ProtoMajor == 2
}
