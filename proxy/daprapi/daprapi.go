package daprapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// InvokePath is the HTTP/2 path of the one gRPC method this package serves.
const InvokePath = runtimev1pb.Dapr_InvokeService_FullMethodName

// DefaultMaxMessageSize bounds the request and the buffered response of one
// call, like daprd's --dapr-http-max-request-size default (4 MiB).
const DefaultMaxMessageSize = 4 << 20

// ProtobufContentType is the content type daprd sends when the request data
// is a typed google.protobuf.Any (its type_url is set).
const ProtobufContentType = "application/x-protobuf"

// HTTPStatusMetadata is the response header metadata carrying the HTTP status
// of the answer, as daprd sends it.
const HTTPStatusMetadata = "dapr-http-status"

// Option configures the handler made by New.
type Option func(*config)

type config struct {
	maxMessageSize int
	logger         *slog.Logger
	metadata       MetadataFunc
	attrs          *Attributes
}

// WithMaxMessageSize sets the largest request message and response body, in
// bytes, of one call (default DefaultMaxMessageSize). A larger response body
// fails the call with ResourceExhausted.
func WithMaxMessageSize(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxMessageSize = n
		}
	}
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.logger = l
		}
	}
}

// Handler serves Dapr's InvokeService over HTTP/2 (h2c or TLS). It is an
// http.Handler; mount it for InvokePath only.
type Handler struct {
	srv *grpc.Server
}

// New returns a Handler that turns every InvokeService call into an HTTP
// request to /v1.0/invoke/{id}/method/{method} and serves it with next, the
// sidecar's outbound HTTP handler. The answer next writes is buffered (up to
// the max message size) and returned as the InvokeResponse.
func New(next http.Handler, opts ...Option) *Handler {
	c := config{maxMessageSize: DefaultMaxMessageSize, logger: slog.Default()}
	for _, o := range opts {
		o(&c)
	}
	srv := grpc.NewServer(
		grpc.MaxRecvMsgSize(c.maxMessageSize+64<<10), // room for the envelope around the data
		grpc.MaxSendMsgSize(c.maxMessageSize+64<<10),
	)
	runtimev1pb.RegisterDaprServer(srv, &service{next: next, cfg: c})
	return &Handler{srv: srv}
}

// ServeHTTP serves one gRPC call: InvokeService, and GetMetadata when
// WithMetadata was given. Requests for other Dapr methods get
// Unimplemented.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.srv.ServeHTTP(w, r)
}

// Close ends the calls in flight (they fail with Unavailable) and makes every
// later call fail.
func (h *Handler) Close() {
	h.srv.Stop()
}

type service struct {
	runtimev1pb.UnimplementedDaprServer
	next http.Handler
	cfg  config
}

// InvokeService implements dapr.proto.runtime.v1.Dapr/InvokeService.
func (s *service) InvokeService(ctx context.Context, in *runtimev1pb.InvokeServiceRequest) (*commonv1pb.InvokeResponse, error) {
	req, err := NewHTTPRequest(ctx, in)
	if err != nil {
		return nil, err
	}
	rb := &responseBuffer{header: make(http.Header), max: s.cfg.maxMessageSize}
	if err := s.serve(rb, req); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil { // the caller gave up or its deadline passed
		return nil, status.FromContextError(err).Err()
	}
	if rb.overflow {
		return nil, status.Errorf(codes.ResourceExhausted, "daprapi: response body of app %s is larger than %d bytes", in.GetId(), s.cfg.maxMessageSize)
	}
	code := rb.statusCode()
	md := ResponseMetadata(rb.header, code)
	if err := grpc.SetHeader(ctx, md); err != nil {
		s.cfg.logger.Debug("daprapi: set header", "err", err)
	}
	if st := ErrorStatus(code, rb.header, rb.body.Bytes()); st != nil {
		return nil, st.Err()
	}
	return &commonv1pb.InvokeResponse{
		Data:        &anypb.Any{Value: rb.body.Bytes()},
		ContentType: rb.header.Get("Content-Type"),
	}, nil
}

// serve runs next, turning a panic into an error: httputil.ReverseProxy
// panics with http.ErrAbortHandler when the upstream body breaks, which
// net/http would recover but grpc does not.
func (s *service) serve(w http.ResponseWriter, r *http.Request) (err error) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler { //nolint:errorlint // sentinel value compared as net/http does
				err = status.Error(codes.Unavailable, "daprapi: invoke: response aborted")
				return
			}
			s.cfg.logger.Error("daprapi: panic in outbound handler", "panic", p, "stack", string(debug.Stack()))
			err = status.Error(codes.Internal, "daprapi: invoke: internal error")
		}
	}()
	s.next.ServeHTTP(w, r)
	return nil
}

// NewHTTPRequest translates an InvokeServiceRequest received on ctx into the
// equivalent request to the HTTP invoke API:
//
//	{verb} /v1.0/invoke/{id}/method/{method}?{querystring}
//
// The method is taken as the escaped path of the request line, as daprd does
// (so "a%20b" reaches the app as "/a%20b"); a method holding a '?' (and no
// separate querystring) is split there into path and query, as daprd hands
// "echo?x=1" to the app as /echo?x=1. The verb defaults to POST when the
// http_extension or its verb is missing (daprd rejects that for HTTP apps;
// gRPC clients of meshd need not know HTTP). The body is data.value; the
// content type is content_type, or application/x-protobuf when data carries
// a type_url. Incoming gRPC metadata becomes headers as in daprd (see
// RequestHeaders). Bad input gives an InvalidArgument status error.
func NewHTTPRequest(ctx context.Context, in *runtimev1pb.InvokeServiceRequest) (*http.Request, error) {
	id := in.GetId()
	if err := validateAppID(id); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	msg := in.GetMessage()
	if msg == nil {
		return nil, status.Error(codes.InvalidArgument, "daprapi: message is required")
	}
	verb := http.MethodPost
	switch v := msg.GetHttpExtension().GetVerb(); v {
	case commonv1pb.HTTPExtension_NONE:
	case commonv1pb.HTTPExtension_CONNECT:
		return nil, status.Error(codes.InvalidArgument, "daprapi: invalid HTTP verb CONNECT")
	default:
		name, ok := commonv1pb.HTTPExtension_Verb_name[int32(v)]
		if !ok {
			return nil, status.Errorf(codes.InvalidArgument, "daprapi: invalid HTTP verb %d", v)
		}
		verb = name
	}
	method := strings.TrimLeft(msg.GetMethod(), "/")
	qs := msg.GetHttpExtension().GetQuerystring()
	if strings.IndexByte(method, '#') >= 0 {
		return nil, status.Errorf(codes.InvalidArgument, "daprapi: method %q must not contain '#'", method)
	}
	// "echo?x=1": the only way some SDKs (JavaScript) send a query. Split
	// at the first '?'; the path is normalized once, with every other.
	if i := strings.IndexByte(method, '?'); i >= 0 {
		if qs != "" {
			return nil, status.Errorf(codes.InvalidArgument, "daprapi: method %q carries a query and http_extension.querystring is set too: use one", method)
		}
		method, qs = method[:i], method[i+1:]
	}
	if method == "" {
		return nil, status.Error(codes.InvalidArgument, "daprapi: method is required")
	}
	var sb strings.Builder
	sb.Grow(len("/v1.0/invoke//method/?") + len(id) + len(method) + len(qs))
	sb.WriteString("/v1.0/invoke/")
	sb.WriteString(id)
	sb.WriteString("/method/")
	sb.WriteString(method)
	if qs != "" {
		sb.WriteByte('?')
		sb.WriteString(qs)
	}
	uri := sb.String()
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "daprapi: bad method or query string: %v", err)
	}

	md, _ := metadata.FromIncomingContext(ctx)
	header := RequestHeaders(md)
	data := msg.GetData().GetValue()
	switch {
	case msg.GetData().GetTypeUrl() != "":
		header.Set("Content-Type", ProtobufContentType)
	case msg.GetContentType() != "":
		header.Set("Content-Type", msg.GetContentType())
	}
	host := "127.0.0.1"
	if a := md.Get(":authority"); len(a) > 0 && a[0] != "" {
		host = a[0]
	}
	var remote string
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		remote = p.Addr.String()
	}
	req := &http.Request{
		Method:        verb,
		URL:           u,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        header,
		Body:          http.NoBody,
		ContentLength: int64(len(data)),
		Host:          host,
		RemoteAddr:    remote,
		RequestURI:    uri,
	}
	if len(data) > 0 {
		req.Body = io.NopCloser(bytes.NewReader(data))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
	}
	return req.WithContext(ctx), nil
}

// validateAppID accepts "{app}" or "{app}.{ns}" made of SPIFFE path segment
// characters; the outbound handler checks the rest.
func validateAppID(id string) error {
	if id == "" {
		return errors.New("daprapi: app id is required")
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("daprapi: invalid app id %q: character %q not allowed", id, c)
		}
	}
	return nil
}

// responseBuffer collects what the outbound handler answers.
type responseBuffer struct {
	header   http.Header
	status   int
	body     bytes.Buffer
	max      int
	overflow bool
}

var errBodyTooLarge = errors.New("daprapi: response body too large")

func (b *responseBuffer) Header() http.Header { return b.header }

func (b *responseBuffer) WriteHeader(code int) {
	if b.status != 0 || code < 200 { // 1xx are interim answers
		return
	}
	b.status = code
}

func (b *responseBuffer) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	if b.overflow || b.body.Len()+len(p) > b.max {
		b.overflow = true
		return 0, errBodyTooLarge
	}
	return b.body.Write(p)
}

// Flush is a no-op: the whole answer goes back in one message.
func (b *responseBuffer) Flush() {}

func (b *responseBuffer) statusCode() int {
	if b.status == 0 {
		return http.StatusOK
	}
	return b.status
}

// compile-time check.
var _ http.Flusher = (*responseBuffer)(nil)
