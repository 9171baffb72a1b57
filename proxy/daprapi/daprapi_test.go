package daprapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// echoed is what the test's outbound handler saw.
type echoed struct {
	Method      string              `json:"method"`
	Path        string              `json:"path"`
	RawQuery    string              `json:"rawQuery"`
	RequestURI  string              `json:"requestURI"`
	Host        string              `json:"host"`
	Header      map[string][]string `json:"header"`
	Body        []byte              `json:"body"`
	Length      int64               `json:"contentLength"`
	HasDeadline bool                `json:"hasDeadline"`
	RemoteAddr  string              `json:"remoteAddr"`
}

const prefix = "/v1.0/invoke/app/method/"

// outbound stands in for the proxy's outbound HTTP handler.
func outbound(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, prefix)
	switch {
	case strings.HasPrefix(rest, "status/"): // the app answers with that status
		code, _ := strconv.Atoi(strings.TrimPrefix(rest, "status/"))
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, "app says "+strconv.Itoa(code))
		return
	case strings.HasPrefix(rest, "sidecar/"): // the sidecar answers with an error
		code, _ := strconv.Atoi(strings.TrimPrefix(rest, "sidecar/"))
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set(ErrorCodeHeader, "ERR_TEST")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, `{"errorCode":"ERR_TEST","message":"sidecar says `+strconv.Itoa(code)+`"}`)
		return
	case rest == "abort":
		panic(http.ErrAbortHandler)
	case rest == "panic":
		panic("boom")
	case rest == "big":
		_, _ = w.Write(make([]byte, 1000))
		_, _ = w.Write(make([]byte, 1000))
		return
	case rest == "wait":
		<-r.Context().Done()
		return
	case rest == "headers":
		w.Header().Set("X-Custom", "yes")
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Grpc-Thing", "x")
		w.Header().Set("Trace-Bin", "AAEC") // base64 of 00 01 02
		_, _ = io.WriteString(w, "hi")
		return
	}
	body, _ := io.ReadAll(r.Body)
	_, hasDeadline := r.Context().Deadline()
	e := echoed{
		Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, RequestURI: r.RequestURI,
		Host: r.Host, Header: r.Header, Body: body, Length: r.ContentLength,
		HasDeadline: hasDeadline, RemoteAddr: r.RemoteAddr,
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(e)
}

// startServer serves the handler on an h2c server on 127.0.0.1:0, as the
// app-facing gRPC port does.
func startServer(t testing.TB, opts ...Option) string {
	t.Helper()
	h := New(http.HandlerFunc(outbound), append([]Option{WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
	mux := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != InvokePath && r.URL.Path != MetadataPath && r.URL.Path != SetMetadataPath {
			http.Error(w, "not mounted", http.StatusNotFound)
			return
		}
		h.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: mux, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		h.Close()
		_ = srv.Close()
	})
	return ln.Addr().String()
}

func sdkClient(t testing.TB, addr string) dapr.Client {
	t.Helper()
	c, err := dapr.NewClientWithAddress(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func rawClient(t testing.TB, addr string) runtimev1pb.DaprClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return runtimev1pb.NewDaprClient(conn)
}

func decode(t *testing.T, b []byte) echoed {
	t.Helper()
	var e echoed
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	return e
}

func TestSDKInvokeMethodVerbs(t *testing.T) {
	c := sdkClient(t, startServer(t))
	ctx := context.Background()
	for _, tc := range []struct{ verb, want string }{
		{"get", "GET"}, {"GET", "GET"}, {"post", "POST"}, {"put", "PUT"}, {"delete", "DELETE"},
		{"patch", "PATCH"}, {"options", "OPTIONS"}, {"trace", "TRACE"}, {"head", "HEAD"},
		{"frobnicate", "POST"}, // the SDK sends NONE for unknown verbs: meshd defaults to POST
	} {
		t.Run(tc.verb, func(t *testing.T) {
			out, err := c.InvokeMethod(ctx, "app", "orders/42", tc.verb)
			if err != nil {
				t.Fatal(err)
			}
			e := decode(t, out)
			if e.Method != tc.want {
				t.Errorf("method = %q, want %q", e.Method, tc.want)
			}
			if e.Path != prefix+"orders/42" || e.RequestURI != prefix+"orders/42" {
				t.Errorf("path = %q, request URI %q", e.Path, e.RequestURI)
			}
			if len(e.Body) != 0 || e.Length != 0 {
				t.Errorf("body = %q (length %d), want empty", e.Body, e.Length)
			}
			if _, ok := e.Header["Content-Type"]; ok {
				t.Errorf("Content-Type %q sent for a call without content", e.Header["Content-Type"])
			}
		})
	}
}

func TestSDKQueryNamespaceAndPaths(t *testing.T) {
	c := sdkClient(t, startServer(t))
	ctx := context.Background()
	for _, tc := range []struct {
		app, method         string
		wantPath, wantQuery string
	}{
		{"app", "search?q=x&n=1", prefix + "search", "q=x&n=1"},
		{"app", "/leading/slash", prefix + "leading/slash", ""},
		{"app", "a/b/c?x=%20y", prefix + "a/b/c", "x=%20y"},
		{"app", "esc%20aped", prefix + "esc aped", ""},
		{"app.prod", "ns", "/v1.0/invoke/app.prod/method/ns", ""},
	} {
		t.Run(tc.method, func(t *testing.T) {
			out, err := c.InvokeMethod(ctx, tc.app, tc.method, "get")
			if err != nil {
				t.Fatal(err)
			}
			e := decode(t, out)
			if e.Path != tc.wantPath || e.RawQuery != tc.wantQuery {
				t.Errorf("path %q query %q, want %q %q", e.Path, e.RawQuery, tc.wantPath, tc.wantQuery)
			}
		})
	}
}

func TestSDKInvokeWithContent(t *testing.T) {
	c := sdkClient(t, startServer(t))
	ctx := context.Background()
	for _, tc := range []struct {
		name, ct string
		data     []byte
	}{
		{"json", "application/json", []byte(`{"a":1}`)},
		{"text", "text/plain; charset=utf-8", []byte("hello")},
		{"binary", "application/octet-stream", []byte{0, 1, 2, 0xff}},
		{"no content type", "", []byte("raw")},
		{"empty", "application/json", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := c.InvokeMethodWithContent(ctx, "app", "put/it?v=2", "put",
				&dapr.DataContent{Data: tc.data, ContentType: tc.ct})
			if err != nil {
				t.Fatal(err)
			}
			e := decode(t, out)
			if e.Method != "PUT" || e.Path != prefix+"put/it" || e.RawQuery != "v=2" {
				t.Errorf("got %s %s?%s", e.Method, e.Path, e.RawQuery)
			}
			if string(e.Body) != string(tc.data) || e.Length != int64(len(tc.data)) {
				t.Errorf("body %q (length %d), want %q", e.Body, e.Length, tc.data)
			}
			got := e.Header["Content-Type"]
			if tc.ct == "" && got != nil || tc.ct != "" && (len(got) != 1 || got[0] != tc.ct) {
				t.Errorf("Content-Type %q, want %q", got, tc.ct)
			}
		})
	}
}

func TestLargeBody(t *testing.T) {
	c := sdkClient(t, startServer(t))
	data := make([]byte, 2<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	out, err := c.InvokeMethodWithContent(context.Background(), "app", "upload", "post",
		&dapr.DataContent{Data: data, ContentType: "application/octet-stream"})
	if err != nil {
		t.Fatal(err)
	}
	e := decode(t, out)
	want := sha256.Sum256(data)
	got := sha256.Sum256(e.Body)
	if hex.EncodeToString(got[:]) != hex.EncodeToString(want[:]) || e.Length != int64(len(data)) {
		t.Errorf("body of %d bytes arrived as %d bytes (content length %d)", len(data), len(e.Body), e.Length)
	}
}

func TestMetadataBecomesHeaders(t *testing.T) {
	c := sdkClient(t, startServer(t))
	ctx := metadata.AppendToOutgoingContext(context.Background(),
		"x-request-id", "r1", "x-multi", "a", "x-multi", "b",
		"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"dapr-app-id", "elsewhere", "dapr-api-token", "secret",
		"dapr-caller-app-id", "forged", "data-bin", "\x00\x01")
	out, err := c.InvokeMethodWithContent(ctx, "app", "m", "post", &dapr.DataContent{Data: []byte("x"), ContentType: "text/plain"})
	if err != nil {
		t.Fatal(err)
	}
	e := decode(t, out)
	want := map[string][]string{
		"X-Request-Id": {"r1"},
		"X-Multi":      {"a", "b"},
		"Traceparent":  {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		"Content-Type": {"text/plain"},
	}
	for k, v := range want {
		if strings.Join(e.Header[k], ",") != strings.Join(v, ",") {
			t.Errorf("header %s = %q, want %q", k, e.Header[k], v)
		}
	}
	for _, k := range []string{"Dapr-App-Id", "Dapr-Api-Token", "Dapr-Caller-App-Id", "Data-Bin", "Te", "Grpc-Timeout"} {
		if v, ok := e.Header[k]; ok {
			t.Errorf("header %s = %q must not be forwarded", k, v)
		}
	}
	if len(e.Header["Dapr-Authority"]) != 1 || e.Host == "" {
		t.Errorf("authority not carried: Dapr-Authority %q, Host %q", e.Header["Dapr-Authority"], e.Host)
	}
	if !strings.HasPrefix(strings.Join(e.Header["User-Agent"], ""), "dapr-sdk-go") {
		t.Errorf("User-Agent = %q, want the SDK's", e.Header["User-Agent"])
	}
	if e.Path != prefix+"m" {
		t.Errorf("dapr-app-id metadata re-targeted the call to %q", e.Path)
	}
	if !strings.HasPrefix(e.RemoteAddr, "127.0.0.1:") {
		t.Errorf("RemoteAddr = %q", e.RemoteAddr)
	}
}

func TestDeadlinePropagates(t *testing.T) {
	c := sdkClient(t, startServer(t))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := c.InvokeMethod(ctx, "app", "m", "get")
	if err != nil {
		t.Fatal(err)
	}
	if !decode(t, out).HasDeadline {
		t.Error("the outbound request carries no deadline")
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	start := time.Now()
	_, err = c.InvokeMethod(ctx2, "app", "wait", "get")
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("err = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("deadline honoured only after %v", d)
	}
}

func errorInfo(t *testing.T, err error) *errdetails.ErrorInfo {
	t.Helper()
	for _, d := range status.Convert(err).Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei
		}
	}
	t.Fatalf("no ErrorInfo in %v", err)
	return nil
}

func TestErrorMapping(t *testing.T) {
	c := sdkClient(t, startServer(t))
	ctx := context.Background()
	for _, tc := range []struct {
		method   string
		code     codes.Code
		msg      string
		domain   string
		reason   string
		httpCode string
	}{
		// the app's own errors, mapped as daprd maps them
		{"status/400", codes.Internal, "Bad Request", DaprErrorDomain, "Bad Request", "400"},
		{"status/401", codes.Unauthenticated, "Unauthorized", DaprErrorDomain, "Unauthorized", "401"},
		{"status/403", codes.PermissionDenied, "Forbidden", DaprErrorDomain, "Forbidden", "403"},
		{"status/404", codes.NotFound, "Not Found", DaprErrorDomain, "Not Found", "404"},
		{"status/409", codes.AlreadyExists, "Conflict", DaprErrorDomain, "Conflict", "409"},
		{"status/429", codes.ResourceExhausted, "Too Many Requests", DaprErrorDomain, "Too Many Requests", "429"},
		{"status/500", codes.Unknown, "Internal Server Error", DaprErrorDomain, "Internal Server Error", "500"},
		{"status/501", codes.Unimplemented, "Not Implemented", DaprErrorDomain, "Not Implemented", "501"},
		{"status/503", codes.Unavailable, "Service Unavailable", DaprErrorDomain, "Service Unavailable", "503"},
		{"status/504", codes.DeadlineExceeded, "Gateway Timeout", DaprErrorDomain, "Gateway Timeout", "504"},
		{"status/302", codes.Unknown, "Found", DaprErrorDomain, "Found", "302"},
		// errors of the sidecar itself
		{"sidecar/400", codes.InvalidArgument, "sidecar says 400", MeshdErrorDomain, "ERR_TEST", "400"},
		{"sidecar/403", codes.PermissionDenied, "sidecar says 403", MeshdErrorDomain, "ERR_TEST", "403"},
		{"sidecar/404", codes.NotFound, "sidecar says 404", MeshdErrorDomain, "ERR_TEST", "404"},
		{"sidecar/500", codes.Internal, "sidecar says 500", MeshdErrorDomain, "ERR_TEST", "500"},
		{"sidecar/502", codes.Unavailable, "sidecar says 502", MeshdErrorDomain, "ERR_TEST", "502"},
		{"sidecar/503", codes.Unavailable, "sidecar says 503", MeshdErrorDomain, "ERR_TEST", "503"},
		{"sidecar/504", codes.DeadlineExceeded, "sidecar says 504", MeshdErrorDomain, "ERR_TEST", "504"},
	} {
		t.Run(tc.method, func(t *testing.T) {
			_, err := c.InvokeMethod(ctx, "app", tc.method, "get")
			st := status.Convert(err)
			if err == nil || st.Code() != tc.code || st.Message() != tc.msg {
				t.Fatalf("err = %v, want code %v message %q", err, tc.code, tc.msg)
			}
			ei := errorInfo(t, err)
			if ei.GetDomain() != tc.domain || ei.GetReason() != tc.reason || ei.GetMetadata()["http.code"] != tc.httpCode {
				t.Errorf("ErrorInfo = %v", ei)
			}
			if tc.domain == DaprErrorDomain && ei.GetMetadata()["http.error_message"] != "app says "+tc.httpCode {
				t.Errorf("http.error_message = %q", ei.GetMetadata()["http.error_message"])
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	c := rawClient(t, startServer(t))
	ctx := context.Background()
	get := &commonv1pb.HTTPExtension{Verb: commonv1pb.HTTPExtension_GET}
	for _, tc := range []struct {
		name string
		req  *runtimev1pb.InvokeServiceRequest
		want string
	}{
		{"no id", &runtimev1pb.InvokeServiceRequest{Message: &commonv1pb.InvokeRequest{Method: "m"}}, "app id is required"},
		{"slash in id", &runtimev1pb.InvokeServiceRequest{Id: "a/b", Message: &commonv1pb.InvokeRequest{Method: "m"}}, "invalid app id"},
		{"url id", &runtimev1pb.InvokeServiceRequest{Id: "http://x", Message: &commonv1pb.InvokeRequest{Method: "m"}}, "invalid app id"},
		{"no message", &runtimev1pb.InvokeServiceRequest{Id: "app"}, "message is required"},
		{"no method", &runtimev1pb.InvokeServiceRequest{Id: "app", Message: &commonv1pb.InvokeRequest{HttpExtension: get}}, "method is required"},
		{"only slashes", &runtimev1pb.InvokeServiceRequest{Id: "app", Message: &commonv1pb.InvokeRequest{Method: "//"}}, "method is required"},
		{"hash in method", &runtimev1pb.InvokeServiceRequest{Id: "app", Message: &commonv1pb.InvokeRequest{Method: "a#b"}}, "must not contain"},
		{"hash in query of method", &runtimev1pb.InvokeServiceRequest{Id: "app", Message: &commonv1pb.InvokeRequest{Method: "a?b#c"}}, "must not contain"},
		{"query in method and querystring", &runtimev1pb.InvokeServiceRequest{Id: "app", Message: &commonv1pb.InvokeRequest{Method: "a?b=1",
			HttpExtension: &commonv1pb.HTTPExtension{Verb: commonv1pb.HTTPExtension_GET, Querystring: "c=2"}}}, "use one"},
		{"only a query", &runtimev1pb.InvokeServiceRequest{Id: "app", Message: &commonv1pb.InvokeRequest{Method: "?x=1"}}, "method is required"},
		{"control char", &runtimev1pb.InvokeServiceRequest{Id: "app", Message: &commonv1pb.InvokeRequest{Method: "a\x01b"}}, "bad method"},
		{"bad escape", &runtimev1pb.InvokeServiceRequest{Id: "app", Message: &commonv1pb.InvokeRequest{Method: "a%zz"}}, "bad method"},
		{"control char in query", &runtimev1pb.InvokeServiceRequest{Id: "app", Message: &commonv1pb.InvokeRequest{Method: "m",
			HttpExtension: &commonv1pb.HTTPExtension{Verb: commonv1pb.HTTPExtension_GET, Querystring: "a=\x7f"}}}, "bad method"},
		{"connect", &runtimev1pb.InvokeServiceRequest{Id: "app", Message: &commonv1pb.InvokeRequest{Method: "m",
			HttpExtension: &commonv1pb.HTTPExtension{Verb: commonv1pb.HTTPExtension_CONNECT}}}, "CONNECT"},
		{"unknown verb", &runtimev1pb.InvokeServiceRequest{Id: "app", Message: &commonv1pb.InvokeRequest{Method: "m",
			HttpExtension: &commonv1pb.HTTPExtension{Verb: 99}}}, "invalid HTTP verb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.InvokeService(ctx, tc.req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want InvalidArgument containing %q", err, tc.want)
			}
		})
	}
}

func TestTypedAnyAndMissingExtension(t *testing.T) {
	c := rawClient(t, startServer(t))
	resp, err := c.InvokeService(context.Background(), &runtimev1pb.InvokeServiceRequest{
		Id: "app",
		Message: &commonv1pb.InvokeRequest{
			Method:      "typed",
			Data:        &anypb.Any{TypeUrl: "type.googleapis.com/x.Y", Value: []byte{8, 1}},
			ContentType: "application/json", // ignored when the data is typed, as in daprd
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	e := decode(t, resp.GetData().GetValue())
	if e.Method != "POST" {
		t.Errorf("method without http_extension = %q, want POST", e.Method)
	}
	if got := strings.Join(e.Header["Content-Type"], ","); got != ProtobufContentType {
		t.Errorf("Content-Type = %q, want %q", got, ProtobufContentType)
	}
	if string(e.Body) != "\x08\x01" {
		t.Errorf("body = %q", e.Body)
	}
	if resp.GetContentType() != "application/json" {
		t.Errorf("response content type = %q", resp.GetContentType())
	}
}

func TestResponseHeaders(t *testing.T) {
	c := rawClient(t, startServer(t))
	var hdr metadata.MD
	resp, err := c.InvokeService(context.Background(), &runtimev1pb.InvokeServiceRequest{
		Id: "app", Message: &commonv1pb.InvokeRequest{Method: "headers"},
	}, grpc.Header(&hdr))
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.GetData().GetValue()) != "hi" || resp.GetContentType() != "text/plain" {
		t.Errorf("response = %q %q", resp.GetData().GetValue(), resp.GetContentType())
	}
	for k, v := range map[string]string{
		"x-custom": "yes", "dapr-content-type": "text/plain", "dapr-http-status": "200",
		"dapr-grpc-thing": "x", "trace-bin": "\x00\x01\x02",
	} {
		if got := strings.Join(hdr.Get(k), ","); got != v {
			t.Errorf("header metadata %s = %q, want %q (all: %v)", k, got, v, hdr)
		}
	}
	// errors carry the HTTP status too.
	_, err = c.InvokeService(context.Background(), &runtimev1pb.InvokeServiceRequest{
		Id: "app", Message: &commonv1pb.InvokeRequest{Method: "status/404"},
	}, grpc.Header(&hdr))
	if status.Code(err) != codes.NotFound || strings.Join(hdr.Get("dapr-http-status"), "") != "404" {
		t.Errorf("err %v, dapr-http-status %q", err, hdr.Get("dapr-http-status"))
	}
}

func TestHandlerFailures(t *testing.T) {
	c := rawClient(t, startServer(t, WithMaxMessageSize(1500)))
	for _, tc := range []struct {
		method string
		code   codes.Code
	}{
		{"abort", codes.Unavailable},
		{"panic", codes.Internal},
		{"big", codes.ResourceExhausted},
	} {
		t.Run(tc.method, func(t *testing.T) {
			_, err := c.InvokeService(context.Background(), &runtimev1pb.InvokeServiceRequest{
				Id: "app", Message: &commonv1pb.InvokeRequest{Method: tc.method},
			})
			if status.Code(err) != tc.code {
				t.Errorf("err = %v, want %v", err, tc.code)
			}
		})
	}
	// A request larger than the limit is refused by grpc itself.
	_, err := c.InvokeService(context.Background(), &runtimev1pb.InvokeServiceRequest{
		Id: "app", Message: &commonv1pb.InvokeRequest{Method: "m", Data: &anypb.Any{Value: make([]byte, 100<<10)}},
	})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("oversized request: err = %v, want ResourceExhausted", err)
	}
}

func TestOtherDaprMethodsUnimplemented(t *testing.T) {
	c := rawClient(t, startServer(t))
	_, err := c.GetState(context.Background(), &runtimev1pb.GetStateRequest{StoreName: "s", Key: "k"})
	if status.Code(err) != codes.Unimplemented && status.Code(err) != codes.NotFound {
		t.Errorf("err = %v", err)
	}
}

func TestClose(t *testing.T) {
	h := New(http.HandlerFunc(outbound))
	h.Close()
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	c := rawClient(t, ln.Addr().String())
	_, err = c.InvokeService(context.Background(), &runtimev1pb.InvokeServiceRequest{Id: "app", Message: &commonv1pb.InvokeRequest{Method: "m"}})
	if err == nil {
		t.Fatal("call succeeded on a closed handler")
	}
}

func TestValidUTF8(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"hello", 10, "hello"},
		{"hello", 3, "hel"},
		{"héllo", 2, "h"}, // é is two bytes: never cut inside it
		{"héllo", 3, "hé"},
		{"a\xffb", 10, "a\uFFFDb"},
	} {
		if got := validUTF8(tc.in, tc.n); got != tc.want {
			t.Errorf("validUTF8(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

func FuzzNewHTTPRequest(f *testing.F) {
	f.Add("app", "orders/42", "a=1", int32(1), "text/plain")
	f.Add("app.ns", "%2e%2e/admin", "", int32(0), "")
	f.Add("a/b", "x#y", "q=\x00", int32(5), "")
	f.Add("app", "echo?x=1&y=a%20b", "", int32(1), "")
	f.Add("app", "echo?x=1", "y=2", int32(1), "")
	f.Fuzz(func(t *testing.T, id, method, qs string, verb int32, ct string) {
		in := &runtimev1pb.InvokeServiceRequest{Id: id, Message: &commonv1pb.InvokeRequest{
			Method: method, ContentType: ct, Data: &anypb.Any{Value: []byte("b")},
			HttpExtension: &commonv1pb.HTTPExtension{Verb: commonv1pb.HTTPExtension_Verb(verb), Querystring: qs},
		}}
		req, err := NewHTTPRequest(context.Background(), in)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("error %v is not InvalidArgument", err)
			}
			return
		}
		wantPrefix := "/v1.0/invoke/" + id + "/method/"
		if !strings.HasPrefix(req.URL.Path, wantPrefix) || !strings.HasPrefix(req.RequestURI, wantPrefix) {
			t.Fatalf("path %q does not start with %q", req.URL.Path, wantPrefix)
		}
		// A query in the method (and none beside it) is the query.
		wantQuery := qs
		if _, q, ok := strings.Cut(method, "?"); ok {
			if qs != "" {
				t.Fatalf("method %q with querystring %q accepted", method, qs)
			}
			wantQuery = q
		}
		if req.URL.RawQuery != wantQuery || req.URL.Host != "" || req.URL.Scheme != "" {
			t.Fatalf("URL %#v from method %q query %q", req.URL, method, qs)
		}
		if strings.ContainsAny(req.URL.Path, "?#") {
			t.Fatalf("path %q holds ? or #", req.URL.Path)
		}
		if req.ContentLength != 1 {
			t.Fatalf("content length %d", req.ContentLength)
		}
	})
}

func BenchmarkNewHTTPRequest(b *testing.B) {
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(
		":authority", "127.0.0.1:50001", "content-type", "application/grpc", "user-agent", "grpc-go", "x-request-id", "1"))
	in := &runtimev1pb.InvokeServiceRequest{Id: "orders", Message: &commonv1pb.InvokeRequest{
		Method: "orders/42", Data: &anypb.Any{Value: []byte(`{"a":1}`)}, ContentType: "application/json",
		HttpExtension: &commonv1pb.HTTPExtension{Verb: commonv1pb.HTTPExtension_POST, Querystring: "x=1"},
	}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewHTTPRequest(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInvokeService measures a whole call over h2c: client, grpc
// ServeHTTP, translation and a trivial outbound handler.
func BenchmarkInvokeService(b *testing.B) {
	h := New(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	c := rawClient(b, ln.Addr().String())
	req := &runtimev1pb.InvokeServiceRequest{Id: "orders", Message: &commonv1pb.InvokeRequest{
		Method: "orders/42", Data: &anypb.Any{Value: make([]byte, 1024)}, ContentType: "application/json",
		HttpExtension: &commonv1pb.HTTPExtension{Verb: commonv1pb.HTTPExtension_POST},
	}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.InvokeService(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}
