package appcallback

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/dapr/go-sdk/service/common"
	daprd "github.com/dapr/go-sdk/service/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// startApp runs a gRPC app made with the Dapr Go SDK's service package
// (AppCallback/OnInvoke) on loopback, with APP_API_TOKEN set to appToken.
func startApp(t *testing.T, appToken string) string {
	t.Helper()
	t.Setenv("APP_API_TOKEN", appToken) // read by daprd.NewServiceWithListener
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := daprd.NewServiceWithListener(l)
	echo := func(_ context.Context, in *common.InvocationEvent) (*common.Content, error) {
		b, _ := json.Marshal(map[string]string{"verb": in.Verb, "query": in.QueryString, "ct": in.ContentType, "data": string(in.Data)})
		return &common.Content{ContentType: "application/json", Data: b}, nil
	}
	if err := s.AddServiceInvocationHandler("echo", echo); err != nil {
		t.Fatal(err)
	}
	if err := s.AddServiceInvocationHandler("a/b", echo); err != nil {
		t.Fatal(err)
	}
	if err := s.AddServiceInvocationHandler("missing", func(context.Context, *common.InvocationEvent) (*common.Content, error) {
		return nil, status.Error(codes.NotFound, "no such order")
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddServiceInvocationHandler("plain", func(context.Context, *common.InvocationEvent) (*common.Content, error) {
		return nil, errors.New("boom")
	}); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Start() }()
	t.Cleanup(func() { _ = s.GracefulStop() })
	return l.Addr().String()
}

func TestOnInvoke(t *testing.T) {
	const tok = "app-token-123"
	c, err := New(Config{Target: startApp(t, tok), AppName: "orders", MaxMessageSize: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		name, method, path, query, body string
		token                           string
		want                            int
		wantBody                        string // substring
		grpcCode                        codes.Code
	}{
		{"post with query", "POST", "/echo", "x=1&y=2", `{"a":1}`, tok, 200, `"query":"x=1\u0026y=2"`, codes.OK},
		{"get", "GET", "/echo", "", "", tok, 200, `"verb":"GET"`, codes.OK},
		{"nested method", "PUT", "/a/b", "", "x", tok, 200, `"verb":"PUT"`, codes.OK},
		{"app's NotFound", "GET", "/missing", "", "", tok, 404, "no such order", codes.NotFound},
		{"app's plain error", "GET", "/plain", "", "", tok, 500, "boom", codes.Unknown},
		{"unknown method", "GET", "/nope", "", "", tok, 500, "nope", codes.Unknown},
		{"no app token", "GET", "/echo", "", "", "", 500, "authentication", codes.Unknown},
		{"body too large", "POST", "/echo", "", strings.Repeat("x", 2<<10), tok, 429, "larger than", codes.ResourceExhausted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			if tc.body != "" {
				r.Header.Set("Content-Type", "application/json")
			}
			if tc.token != "" {
				r.Header.Set("Dapr-Api-Token", tc.token)
			}
			r.Header.Set("X-Bad\x01", "v") // not a valid metadata key: dropped, not an error
			w := httptest.NewRecorder()
			c.Serve(w, r, tc.path, tc.query)
			if w.Code != tc.want || !strings.Contains(w.Body.String(), tc.wantBody) {
				t.Fatalf("%d %s, want %d containing %q", w.Code, w.Body, tc.want, tc.wantBody)
			}
			st, ok := StatusFromHTTP(w.Header(), w.Body.Bytes())
			if tc.grpcCode == codes.OK {
				if ok {
					t.Errorf("a success carries a gRPC status %v", st)
				}
				return
			}
			if !ok || st.Code() != tc.grpcCode {
				t.Errorf("status from the answer: %v %v, want %v", st, ok, tc.grpcCode)
			}
		})
	}
}

func TestHTTPStatus(t *testing.T) {
	for c, want := range map[codes.Code]int{codes.OK: 200, codes.InvalidArgument: 400, codes.NotFound: 404, codes.PermissionDenied: 403,
		codes.Unauthenticated: 401, codes.Unavailable: 503, codes.DeadlineExceeded: 504, codes.Internal: 500, codes.Unimplemented: 501} {
		if got := HTTPStatus(c); got != want {
			t.Errorf("%v: %d, want %d", c, got, want)
		}
	}
	if _, ok := StatusFromHTTP(http.Header{HeaderGRPCStatus: {"99"}}, nil); ok {
		t.Error("code 99 accepted")
	}
	if _, ok := StatusFromHTTP(http.Header{HeaderGRPCStatus: {"x"}}, nil); ok {
		t.Error("code x accepted")
	}
}
