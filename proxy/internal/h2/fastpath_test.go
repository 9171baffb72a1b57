package h2

import (
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"testing"
)

// checkPlainPath fails when srvPlainPath takes path as plain but
// url.ParseRequestURI would give something else than a URL with just
// that Path.
func checkPlainPath(t *testing.T, path string) {
	t.Helper()
	if path == "" || path[0] != '/' || !srvPlainPath(path) {
		return
	}
	u, err := url.ParseRequestURI(path)
	if err != nil {
		t.Fatalf("srvPlainPath(%q) but ParseRequestURI: %v", path, err)
	}
	if want := (&url.URL{Path: path}); !reflect.DeepEqual(u, want) {
		t.Fatalf("srvPlainPath(%q) but ParseRequestURI gives %#v", path, u)
	}
}

var plainPathSeeds = []string{"/", "//", "//x/y", "/grpc.testing.TestService/UnaryCall", "/a/../b", "/~u/-._", "/%41", "/a b", "/a?b=1", "/a#f", "/a:b", "/é", "/a;b", "/a\x00"}

// TestSrvPlainPath: the paths srvPlainPath lets skip parsing parse to
// exactly that path; the others (escapes, queries, other characters) do
// not count as plain.
func TestSrvPlainPath(t *testing.T) {
	for _, p := range plainPathSeeds {
		checkPlainPath(t, p)
	}
	for _, p := range []string{"/%41", "/a b", "/a?b=1", "/a#f", "/a:b", "/é", "/a;b", "/a\x00"} {
		if srvPlainPath(p) {
			t.Errorf("srvPlainPath(%q) = true", p)
		}
	}
	for _, p := range []string{"/", "/grpc.testing.TestService/UnaryCall", "/v1.0/invoke/app/method/x-y_z~"} {
		if !srvPlainPath(p) {
			t.Errorf("srvPlainPath(%q) = false", p)
		}
	}
}

func FuzzSrvPlainPath(f *testing.F) {
	for _, p := range plainPathSeeds {
		f.Add(p)
	}
	f.Fuzz(checkPlainPath)
}

// TestClientStatus: the Status of every code is what net/http's client
// gives ("200 OK", "404 Not Found", "599 " ...).
func TestClientStatus(t *testing.T) {
	for code := 200; code < 600; code++ {
		s := strconv.Itoa(code)
		if got, want := clientStatus(s, code), s+" "+http.StatusText(code); got != want {
			t.Errorf("clientStatus(%d) = %q, want %q", code, got, want)
		}
	}
}
