package route

import (
	"bufio"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/meshd/meshd/discovery"
)

func TestNormalize(t *testing.T) {
	ok := []struct{ in, want string }{
		{"/", "/"},
		{"/orders/42", "/orders/42"},
		{"orders", "/orders"},
		{"/a/", "/a/"},
		{"/a/./b", "/a/b"},
		{"/a/b/../c", "/a/c"},
		{"/a/b/..", "/a/"},
		{"/a/..", "/"},
		{"/a/.", "/a/"},
		{"//a//b", "/a/b"},
		{"/a//", "/a/"},
		{"/%61%62c", "/abc"},
		{"/a%20b", "/a%20b"},
		{"/a%2a", "/a*"},
		{"/a b", "/a%20b"},
		{"/caf\xc3\xa9", "/caf%C3%A9"},
		{"/%c3%a9", "/%C3%A9"},
		{"/x%3fy", "/x%3Fy"},
		{"/x%23y", "/x%23y"},
		{"/%25", "/%25"},
		{"/a..b/...", "/a..b/..."},
		{"/a!$&'()*+,;=:@~_-", "/a!$&'()*+,;=:@~_-"},
		{"/pkg.Service/Method", "/pkg.Service/Method"},
		// matrix parameters on ordinary segments are kept
		{"/a;x=1/b", "/a;x=1/b"},
		{"/a%3Bv/b", "/a;v/b"},
		{"/;x/b", "/;x/b"},
		{"/a/..x;y", "/a/..x;y"},
		{"/a/...;y", "/a/...;y"},
		{"/a/x;..", "/a/x;.."},
	}
	for _, tc := range ok {
		got, err := Normalize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	bad := []struct{ in, why string }{
		{"", "empty"},
		{"/a\x00b", "control"},
		{"/a\nb", "control"},
		{"/a\x7f", "control"},
		{"/a%00", "encoded control"},
		{"/a%0d%0a", "encoded control"},
		{"/a#b", "not allowed"},
		{"/a?b", "not allowed"},
		{"/a\\b", "backslash"},
		{"/a%5cb", "encoded backslash"},
		{"/a%5Cb", "encoded backslash"},
		{"/a%2fb", "encoded slash"},
		{"/a%2Fb", "encoded slash"},
		{"/%2e%2e/admin", "encoded dot"},
		{"/a/%2E%2E/b", "encoded dot"},
		{"/a/.%2e/b", "encoded dot"},
		{"/..", "above the root"},
		{"/../admin", "above the root"},
		{"/a/../../admin", "above the root"},
		{"../x", "above the root"},
		{"/a%", "truncated"},
		{"/a%4", "truncated"},
		{"/a%zz", "invalid"},
		// servlet-style ";params" on dot segments
		{"/public/..;/admin/X", "ambiguous"},
		{"/public/..;jsessionid=x/admin", "ambiguous"},
		{"/public/.;/admin", "ambiguous"},
		{"/public/..%3b/admin", "ambiguous"},
		{"/public/..%3B/admin", "ambiguous"},
		{"/public/.%3b/x", "ambiguous"},
		{"/public/..;", "ambiguous"},
		{"..;/admin", "ambiguous"},
		{"/a/b/..;x", "ambiguous"},
		{"/public/..;/..;/admin", "ambiguous"},
	}
	for _, tc := range bad {
		got, err := Normalize(tc.in)
		if err == nil || !errors.Is(err, ErrBadMethod) || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("Normalize(%q) = %q, %v; want ErrBadMethod containing %q", tc.in, got, err, tc.why)
		}
	}
}

func TestParseTarget(t *testing.T) {
	ok := []struct {
		in   string
		want discovery.Target
	}{
		{"orders", discovery.Target{AppID: "orders", Namespace: "def"}},
		{"orders.prod", discovery.Target{AppID: "orders", Namespace: "prod"}},
		{"my-app_2.ns-1", discovery.Target{AppID: "my-app_2", Namespace: "ns-1"}},
	}
	for _, tc := range ok {
		got, err := ParseTarget(tc.in, "def")
		if err != nil || got != tc.want {
			t.Errorf("ParseTarget(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", ".ns", "app.", "a.b.c", "a b", "a/b", "a%2e", "ä", strings.Repeat("a", 65), "a." + strings.Repeat("n", 64)} {
		if got, err := ParseTarget(in, "def"); !errors.Is(err, ErrBadTarget) {
			t.Errorf("ParseTarget(%q) = %v, %v; want ErrBadTarget", in, got, err)
		}
	}
}

// readReq parses a raw HTTP/1.1 request the way the server does, so
// RequestURI is set.
func readReq(t *testing.T, raw string) *http.Request {
	t.Helper()
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatalf("ReadRequest(%q): %v", raw, err)
	}
	return r
}

func TestFromRequest(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    Route
		wantErr error
	}{
		{"invoke", "GET /v1.0/invoke/orders/method/api/v1/x?q=1&r=%2F HTTP/1.1\r\nHost: x\r\n\r\n",
			Route{discovery.Target{AppID: "orders", Namespace: "me"}, "/api/v1/x", "q=1&r=%2F", FormInvoke}, nil},
		{"invoke ns", "POST /v1.0/invoke/orders.prod/method/neworder HTTP/1.1\r\nHost: x\r\n\r\n",
			Route{discovery.Target{AppID: "orders", Namespace: "prod"}, "/neworder", "", FormInvoke}, nil},
		{"invoke cleaned", "GET /v1.0/invoke/orders/method/a/../b//c/ HTTP/1.1\r\nHost: x\r\n\r\n",
			Route{discovery.Target{AppID: "orders", Namespace: "me"}, "/b/c/", "", FormInvoke}, nil},
		{"invoke traversal", "GET /v1.0/invoke/orders/method/../../v1.0/healthz HTTP/1.1\r\nHost: x\r\n\r\n", Route{}, ErrBadMethod},
		{"invoke encoded traversal", "GET /v1.0/invoke/orders/method/%2e%2e/admin HTTP/1.1\r\nHost: x\r\n\r\n", Route{}, ErrBadMethod},
		{"invoke encoded slash", "GET /v1.0/invoke/orders/method/a%2fb HTTP/1.1\r\nHost: x\r\n\r\n", Route{}, ErrBadMethod},
		{"invoke no method", "GET /v1.0/invoke/orders/method/ HTTP/1.1\r\nHost: x\r\n\r\n", Route{}, ErrBadMethod},
		{"invoke no method 2", "GET /v1.0/invoke/orders/method HTTP/1.1\r\nHost: x\r\n\r\n", Route{}, ErrBadMethod},
		{"invoke not method", "GET /v1.0/invoke/orders/meth/x HTTP/1.1\r\nHost: x\r\n\r\n", Route{}, ErrBadMethod},
		{"invoke bad app", "GET /v1.0/invoke/a.b.c/method/x HTTP/1.1\r\nHost: x\r\n\r\n", Route{}, ErrBadTarget},
		{"invoke empty app", "GET /v1.0/invoke//method/x HTTP/1.1\r\nHost: x\r\n\r\n", Route{}, ErrNoTarget},
		{"header empty", "GET /x HTTP/1.1\r\nHost: x\r\ndapr-app-id: \r\n\r\n", Route{}, ErrNoTarget},
		{"header empty, invoke path", "GET /v1.0/invoke/orders/method/x HTTP/1.1\r\nHost: x\r\ndapr-app-id:\r\n\r\n",
			Route{discovery.Target{AppID: "orders", Namespace: "me"}, "/x", "", FormInvoke}, nil},
		{"header", "DELETE /orders/7?x=y HTTP/1.1\r\nHost: x\r\nDapr-App-Id: orders.prod\r\n\r\n",
			Route{discovery.Target{AppID: "orders", Namespace: "prod"}, "/orders/7", "x=y", FormHeader}, nil},
		{"header wins over invoke path", "GET /v1.0/invoke/x/method/y HTTP/1.1\r\nHost: x\r\ndapr-app-id: orders\r\n\r\n",
			Route{discovery.Target{AppID: "orders", Namespace: "me"}, "/v1.0/invoke/x/method/y", "", FormHeader}, nil},
		{"header twice", "GET / HTTP/1.1\r\nHost: x\r\ndapr-app-id: a\r\ndapr-app-id: b\r\n\r\n", Route{}, ErrBadTarget},
		{"header bad", "GET / HTTP/1.1\r\nHost: x\r\ndapr-app-id: a/b\r\n\r\n", Route{}, ErrBadTarget},
		{"proxy", "PUT http://orders.prod:80/items/1?z HTTP/1.1\r\nHost: orders.prod\r\n\r\n",
			Route{discovery.Target{AppID: "orders", Namespace: "prod"}, "/items/1", "z", FormProxy}, nil},
		{"proxy no path", "GET http://orders HTTP/1.1\r\nHost: orders\r\n\r\n",
			Route{discovery.Target{AppID: "orders", Namespace: "me"}, "/", "", FormProxy}, nil},
		{"proxy fqdn", "GET http://api.example.com/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n", Route{}, ErrBadTarget},
		{"no target", "GET /orders HTTP/1.1\r\nHost: x\r\n\r\n", Route{}, ErrNoTarget},
		{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", Route{}, ErrBadMethod},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FromRequest(readReq(t, tc.raw), "me")
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestFromRequestConstructed(t *testing.T) {
	// Requests built in-process (helper handlers) have no RequestURI.
	r, _ := http.NewRequest("GET", "http://127.0.0.1:3500/v1.0/invoke/orders/method/x%20y?a=b", nil)
	got, err := FromRequest(r, "me")
	want := Route{discovery.Target{AppID: "orders", Namespace: "me"}, "/x%20y", "a=b", FormInvoke}
	if err != nil || got != want {
		t.Fatalf("got %+v, %v; want %+v", got, err, want)
	}
}

func TestNoAllocs(t *testing.T) {
	r := readReq(t, "GET /v1.0/invoke/orders.prod/method/api/v1/orders/42?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
	h := readReq(t, "GET /api/v1/orders/42 HTTP/1.1\r\nHost: x\r\nDapr-App-Id: orders\r\n\r\n")
	for _, req := range []*http.Request{r, h} {
		if n := testing.AllocsPerRun(100, func() {
			if _, err := FromRequest(req, "default"); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("FromRequest allocates %v times, want 0", n)
		}
	}
}

func BenchmarkFromRequest(b *testing.B) {
	r, _ := http.ReadRequest(bufio.NewReader(strings.NewReader("GET /v1.0/invoke/orders.prod/method/api/v1/orders/42?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := FromRequest(r, "default"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNormalizeSlow(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Normalize("/api/v1/../v2/orders/%34%32/./x"); err != nil {
			b.Fatal(err)
		}
	}
}
