package appcallback

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
)

// HeaderGRPCStatus carries the gRPC code of an app's OnInvoke error on the
// HTTP answer.
const HeaderGRPCStatus = "Meshd-Grpc-Status"

// DefaultMaxMessageSize bounds a request body and the app's answer (4 MiB,
// daprd's default).
const DefaultMaxMessageSize = 4 << 20

// Config configures New.
type Config struct {
	// Target is the app's host:port.
	Target string
	// TLS dials the app with TLS (grpcs); its certificate is not verified,
	// as in daprd (the app is on the same host or pod).
	TLS bool
	// MaxMessageSize bounds the request body and the answer (default
	// DefaultMaxMessageSize).
	MaxMessageSize int
	// AppName names the app in error messages.
	AppName string
}

// Client calls the app's AppCallback service. It is an http.Handler.
type Client struct {
	conn *grpc.ClientConn
	cb   runtimev1pb.AppCallbackClient
	max  int
	name string
}

// New makes a Client; it connects on the first call.
func New(cfg Config) (*Client, error) {
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	creds := insecure.NewCredentials()
	if cfg.TLS {
		creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // as daprd: the app's certificate is not verified
	}
	conn, err := grpc.NewClient("passthrough:///"+cfg.Target, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.MaxMessageSize+64<<10), grpc.MaxCallSendMsgSize(cfg.MaxMessageSize+64<<10)))
	if err != nil {
		return nil, fmt.Errorf("appcallback: %w", err)
	}
	return &Client{conn: conn, cb: runtimev1pb.NewAppCallbackClient(conn), max: cfg.MaxMessageSize, name: cfg.AppName}, nil
}

// Close closes the connection to the app.
func (c *Client) Close() error { return c.conn.Close() }

// Serve calls OnInvoke for r, whose method is path (normalized, with its
// leading "/") and whose query is query, and writes the answer to w.
func (c *Client) Serve(w http.ResponseWriter, r *http.Request, path, query string) {
	req, err := c.request(r, path, query)
	if err != nil {
		writeStatus(w, status.New(codes.ResourceExhausted, err.Error()))
		return
	}
	var hdr metadata.MD
	ctx := metadata.NewOutgoingContext(r.Context(), Metadata(r.Header))
	resp, err := c.cb.OnInvoke(ctx, req, grpc.Header(&hdr))
	if err != nil {
		st := status.Convert(err)
		if st.Code() == codes.Unavailable && errors.Is(r.Context().Err(), context.Canceled) {
			return // the caller went away
		}
		writeStatus(w, st)
		return
	}
	h := w.Header()
	for k, vs := range hdr {
		if k == "content-type" || strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") {
			continue
		}
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	data := resp.GetData().GetValue()
	ct := resp.GetContentType()
	if ct == "" && resp.GetData().GetTypeUrl() != "" {
		ct = "application/x-protobuf"
	}
	if ct != "" {
		h.Set("Content-Type", ct)
	}
	h.Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(data)
	}
}

// request builds the InvokeRequest of r.
func (c *Client) request(r *http.Request, path, query string) (*commonv1pb.InvokeRequest, error) {
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		b, err := io.ReadAll(io.LimitReader(r.Body, int64(c.max)+1))
		if err != nil {
			return nil, fmt.Errorf("appcallback: read request body: %w", err)
		}
		if len(b) > c.max {
			return nil, fmt.Errorf("appcallback: request body to app %s is larger than %d bytes", c.name, c.max)
		}
		body = b
	}
	verb := commonv1pb.HTTPExtension_Verb(commonv1pb.HTTPExtension_Verb_value[r.Method])
	if verb == commonv1pb.HTTPExtension_NONE {
		verb = commonv1pb.HTTPExtension_POST
	}
	return &commonv1pb.InvokeRequest{
		Method:        strings.TrimPrefix(path, "/"),
		Data:          &anypb.Any{Value: body},
		ContentType:   r.Header.Get("Content-Type"),
		HttpExtension: &commonv1pb.HTTPExtension{Verb: verb, Querystring: query},
	}, nil
}

// Metadata turns HTTP request headers into the app's gRPC metadata: keys
// lower case; hop-by-hop, framing and pseudo headers dropped, and keys or
// values gRPC cannot carry.
func Metadata(h http.Header) metadata.MD {
	md := make(metadata.MD, len(h))
	for k, vs := range h {
		key := strings.ToLower(k)
		switch key {
		case "content-type", "content-length", "host", "te", "connection", "keep-alive", "proxy-connection",
			"transfer-encoding", "upgrade", "user-agent":
			continue
		}
		if strings.HasPrefix(key, "grpc-") || !validKey(key) {
			continue
		}
		for _, v := range vs {
			if validValue(v) || strings.HasSuffix(key, "-bin") {
				md[key] = append(md[key], v)
			}
		}
	}
	return md
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func validValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// writeStatus answers a gRPC error of the app: daprd's HTTP status for its
// code, the status as JSON, the code in HeaderGRPCStatus.
func writeStatus(w http.ResponseWriter, st *status.Status) {
	b, err := protojson.Marshal(st.Proto())
	if err != nil {
		b = []byte(`{"code":` + strconv.Itoa(int(st.Code())) + `}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set(HeaderGRPCStatus, strconv.Itoa(int(st.Code())))
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(HTTPStatus(st.Code()))
	_, _ = w.Write(b)
}

// HTTPStatus maps a gRPC code to an HTTP status as daprd does for an HTTP
// caller of a gRPC app (grpc-gateway's mapping).
func HTTPStatus(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.Canceled:
		return 499
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// StatusFromHTTP recovers the app's gRPC status from an answer written by
// writeStatus (HeaderGRPCStatus set); ok is false for any other answer.
func StatusFromHTTP(h http.Header, body []byte) (st *status.Status, ok bool) {
	v := h.Get(HeaderGRPCStatus)
	if v == "" {
		return nil, false
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 || n > 16 {
		return nil, false
	}
	var p struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(body, &p)
	return status.New(codes.Code(n), p.Message), true
}
