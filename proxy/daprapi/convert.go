package daprapi

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshd/meshd/proxy/appcallback"
)

// ErrorCodeHeader marks an error answered by a meshd sidecar itself (bad
// target, policy deny, no endpoint, transport failure, timeout) rather than
// by the target app. Its value is the JSON errorCode, e.g.
// "ERR_PERMISSION_DENIED". The proxy sets it on every error it writes; the
// app's own answers never carry it.
const ErrorCodeHeader = "Meshd-Error-Code"

// Error details domains.
const (
	// DaprErrorDomain is the ErrorInfo domain of app errors, as in daprd.
	DaprErrorDomain = "dapr.io"
	// MeshdErrorDomain is the ErrorInfo domain of sidecar errors.
	MeshdErrorDomain = "meshd"
)

// daprd truncates the HTTP body it puts in ErrorInfo metadata to 63 bytes.
const maxDetailLen = 63

// maxSidecarMessageLen bounds the status message taken from a sidecar error.
const maxSidecarMessageLen = 1024

// RequestHeaders converts incoming gRPC metadata to the HTTP headers daprd
// passes to the app: ":authority" becomes "dapr-authority" and "grpc-*" keys
// "dapr-grpc-*"; binary ("-bin") keys, content-type (the message's own
// content_type is used) and hop-by-hop headers are dropped. meshd also drops
// what must not travel: "dapr-app-id" (it would re-target the call: the id in
// the request wins), "dapr-api-token" (a credential for this sidecar), and
// the caller identity headers the callee sidecar stamps.
func RequestHeaders(md metadata.MD) http.Header {
	h := make(http.Header, len(md))
	for k, vs := range md {
		// metadata keys are lower case.
		switch k {
		case "content-type", "content-length", "host", "te", "connection", "keep-alive",
			"proxy-connection", "transfer-encoding", "upgrade",
			"dapr-app-id", "dapr-api-token", "dapr-stream",
			"dapr-caller-app-id", "dapr-caller-namespace", "dapr-callee-app-id":
			continue
		case ":authority":
			k = "dapr-authority"
		}
		if strings.HasSuffix(k, "-bin") || strings.HasPrefix(k, ":") {
			continue
		}
		if strings.HasPrefix(k, "grpc-") {
			k = "dapr-" + k
		}
		ck := http.CanonicalHeaderKey(k)
		for _, v := range vs {
			h[ck] = append(h[ck], v)
		}
	}
	return h
}

// ResponseMetadata converts the app's HTTP response headers to the gRPC
// header metadata daprd sends back: keys lower-cased, standard HTTP headers
// (Content-Type, Content-Length, Date, ...) and "grpc-*" prefixed with
// "dapr-", "-bin" values base64-decoded (dropped if not base64), plus
// "dapr-http-status".
func ResponseMetadata(h http.Header, code int) metadata.MD {
	md := make(metadata.MD, len(h)+1)
	for k, vs := range h {
		key := strings.ToLower(k)
		if key == strings.ToLower(ErrorCodeHeader) {
			continue
		}
		if isPermanentHTTPHeader(k) || strings.HasPrefix(key, "grpc-") {
			key = "dapr-" + key
		}
		if strings.HasSuffix(key, "-bin") {
			for _, v := range vs {
				if d, err := base64.StdEncoding.DecodeString(v); err == nil {
					md[key] = append(md[key], string(d))
				}
			}
			continue
		}
		md[key] = append(md[key], vs...)
	}
	md[HTTPStatusMetadata] = []string{strconv.Itoa(code)}
	return md
}

// isPermanentHTTPHeader lists the headers daprd prefixes with "dapr-" when it
// turns HTTP headers into gRPC metadata (pkg/messaging/v1/util.go).
func isPermanentHTTPHeader(k string) bool {
	switch k {
	case "Accept", "Accept-Charset", "Accept-Language", "Accept-Ranges", "Connection",
		"Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "Cache-Control",
		"Content-Type", "Content-Length", "Cookie", "Date", "Expect", "From", "Host",
		"If-Match", "If-Modified-Since", "If-None-Match", "If-Schedule-Tag-Match",
		"If-Unmodified-Since", "Max-Forwards", "Origin", "Pragma", "Referer", "Via", "Warning":
		return true
	}
	return false
}

// CodeFromHTTPStatus maps an HTTP status of the app to a gRPC code exactly as
// daprd does (pkg/messaging/v1 CodeFromHTTPStatus): 2xx OK, 400 Internal,
// 401 Unauthenticated, 403 PermissionDenied, 404 NotFound, 408 Canceled,
// 409 AlreadyExists, 429 ResourceExhausted, 500 Unknown, 501 Unimplemented,
// 503 Unavailable, 504 DeadlineExceeded, anything else Unknown.
func CodeFromHTTPStatus(code int) codes.Code {
	if code >= 200 && code < 300 {
		return codes.OK
	}
	switch code {
	case http.StatusRequestTimeout:
		return codes.Canceled
	case http.StatusInternalServerError:
		return codes.Unknown
	case http.StatusBadRequest:
		return codes.Internal
	case http.StatusGatewayTimeout:
		return codes.DeadlineExceeded
	case http.StatusNotFound:
		return codes.NotFound
	case http.StatusConflict:
		return codes.AlreadyExists
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case http.StatusNotImplemented:
		return codes.Unimplemented
	case http.StatusServiceUnavailable:
		return codes.Unavailable
	}
	return codes.Unknown
}

// SidecarCode maps the status of an error a meshd sidecar answered (marked
// by ErrorCodeHeader) to a gRPC code: 400 InvalidArgument, 403
// PermissionDenied, 404 NotFound, 502 and 503 Unavailable, 504
// DeadlineExceeded, 500 Internal; others as CodeFromHTTPStatus.
func SidecarCode(code int) codes.Code {
	switch code {
	case http.StatusBadRequest:
		return codes.InvalidArgument
	case http.StatusInternalServerError:
		return codes.Internal
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return codes.Unavailable
	}
	return CodeFromHTTPStatus(code)
}

// ErrorStatus returns the gRPC status for an HTTP answer, nil for 2xx.
//
// The status a gRPC app returned from OnInvoke (proxy/appcallback) is
// returned as it was. An HTTP app's error is mapped as daprd maps it: code
// by CodeFromHTTPStatus,
// message the HTTP status text, and an ErrorInfo detail {reason: status
// text, domain: "dapr.io", metadata: {"http.code", "http.error_message":
// the first 63 bytes of the body}}.
//
// A sidecar error (ErrorCodeHeader set) gets SidecarCode, the "message" of
// the JSON error body as status message, and an ErrorInfo {reason:
// errorCode, domain: "meshd", metadata: {"http.code"}}.
func ErrorStatus(code int, h http.Header, body []byte) *status.Status {
	if code >= 200 && code < 300 {
		return nil
	}
	// A gRPC app's own status (AppCallback/OnInvoke), kept as it was.
	if st, ok := appcallback.StatusFromHTTP(h, body); ok {
		return st
	}
	if ec := h.Get(ErrorCodeHeader); ec != "" {
		msg := sidecarMessage(body)
		st := status.New(SidecarCode(code), msg)
		if d, err := st.WithDetails(&errdetails.ErrorInfo{
			Reason:   validUTF8(ec, 128),
			Domain:   MeshdErrorDomain,
			Metadata: map[string]string{"http.code": strconv.Itoa(code)},
		}); err == nil {
			st = d
		}
		return st
	}
	text := http.StatusText(code)
	st := status.New(CodeFromHTTPStatus(code), text)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{
		Reason: text,
		Domain: DaprErrorDomain,
		Metadata: map[string]string{
			"http.code":          strconv.Itoa(code),
			"http.error_message": validUTF8(string(body), maxDetailLen),
		},
	}); err == nil {
		st = d
	}
	return st
}

// sidecarMessage extracts "message" from a JSON error body
// {"errorCode": "...", "message": "..."}, or uses the body itself.
func sidecarMessage(body []byte) string {
	var e struct {
		ErrorCode string `json:"errorCode"`
		Message   string `json:"message"`
	}
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		return validUTF8(e.Message, maxSidecarMessageLen)
	}
	return validUTF8(strings.TrimSpace(string(body)), maxSidecarMessageLen)
}

// validUTF8 truncates s to at most n bytes on a rune boundary and replaces
// invalid UTF-8, since proto strings must be valid UTF-8.
func validUTF8(s string, n int) string {
	if len(s) > n {
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
