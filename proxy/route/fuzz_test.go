package route

import (
	"bufio"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

func checkCanonical(t *testing.T, in, out string) {
	t.Helper()
	if out == "" || out[0] != '/' {
		t.Fatalf("Normalize(%q) = %q: does not start with /", in, out)
	}
	if strings.Contains(out, "//") {
		t.Fatalf("Normalize(%q) = %q: contains //", in, out)
	}
	for _, seg := range strings.Split(out, "/") {
		if seg == ".." || seg == "." {
			t.Fatalf("Normalize(%q) = %q: contains a %q segment", in, out, seg)
		}
	}
	for i := 0; i < len(out); i++ {
		if c := out[i]; c < 0x20 || c == 0x7f || c == '\\' || c == '#' || c == '?' {
			t.Fatalf("Normalize(%q) = %q: contains byte 0x%02x", in, out, c)
		}
	}
	lower := strings.ToLower(out)
	for _, bad := range []string{"%00", "%2f", "%5c", "%2e"} {
		if strings.Contains(lower, bad) {
			t.Fatalf("Normalize(%q) = %q: contains %s", in, out, bad)
		}
	}
	again, err := Normalize(out)
	if err != nil || again != out {
		t.Fatalf("Normalize(Normalize(%q)) = %q, %v; want %q (not idempotent)", in, again, err, out)
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"/", "/a/b", "a/../b", "/%2e%2e/x", "/a%2fb", "//x/./y/", "/caf\xc3\xa9", "/%25%32%65", "/a/..", "/.%2e", "/\x00", "/%zz", "/x%3F"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Normalize(in)
		if err != nil {
			if !errors.Is(err, ErrBadMethod) {
				t.Fatalf("Normalize(%q): error %v does not wrap ErrBadMethod", in, err)
			}
			return
		}
		checkCanonical(t, in, out)
	})
}

// servletView is how Tomcat, Jetty and Spring read a path: strip
// ";params" from each segment, percent-decode it, then resolve "." and
// ".." segments. It returns the resolved segments, and the segments as
// they were before resolution.
func servletView(p string) (resolved, plain []string) {
	for _, seg := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		if i := strings.IndexByte(seg, ';'); i >= 0 {
			seg = seg[:i]
		}
		if dec, err := url.PathUnescape(seg); err == nil {
			seg = dec
		}
		plain = append(plain, seg)
		switch seg {
		case ".":
		case "..":
			if len(resolved) > 0 {
				resolved = resolved[:len(resolved)-1]
			}
		default:
			resolved = append(resolved, seg)
		}
	}
	return resolved, plain
}

// FuzzNormalizeServletView checks that no path Normalize accepts is read
// by a ";"-stripping, ".."-resolving parser as another path than the one
// the policy saw: the parser's view must be the canonical path's own
// segments (with their parameters stripped), nothing resolved away.
func FuzzNormalizeServletView(f *testing.F) {
	for _, s := range []string{"/public/..;/admin/X", "/public/..%3b/admin", "/public/.;/x", "/a;b/..;c/d",
		"/public/..;jsessionid=x/admin", "/p/%2e%2e;/x", "/p/.%3B/x", "/a;x=1/b", "/public/x;/../../admin"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Normalize(in)
		if err != nil {
			return
		}
		resolved, plain := servletView(out)
		if !slices.Equal(resolved, plain) {
			t.Fatalf("Normalize(%q) = %q: a servlet container reads it as /%s", in, out, strings.Join(resolved, "/"))
		}
		for _, seg := range plain {
			if strings.ContainsAny(seg, "/\\") {
				t.Fatalf("Normalize(%q) = %q: segment %q decodes to a separator", in, out, seg)
			}
		}
	})
}

func FuzzFromRequest(f *testing.F) {
	for _, s := range []string{
		"/v1.0/invoke/orders/method/a/b?x=1",
		"/v1.0/invoke/orders.ns/method/../x",
		"/v1.0/invoke/a.b.c/method/x",
		"/v1.0/invoke//method/",
		"http://orders.ns/x?y",
		"/plain",
	} {
		f.Add(s, "")
		f.Add(s, "orders.prod")
	}
	f.Fuzz(func(t *testing.T, uri, header string) {
		raw := "GET " + uri + " HTTP/1.1\r\nHost: h\r\n"
		if header != "" {
			raw += "Dapr-App-Id: " + header + "\r\n"
		}
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw + "\r\n")))
		if err != nil {
			return // not a request the server would accept
		}
		rt, err := FromRequest(r, "default")
		if err != nil {
			if !errors.Is(err, ErrBadMethod) && !errors.Is(err, ErrBadTarget) && !errors.Is(err, ErrNoTarget) {
				t.Fatalf("FromRequest(%q): unexpected error class %v", raw, err)
			}
			return
		}
		if !validName(rt.Target.AppID) || !validName(rt.Target.Namespace) {
			t.Fatalf("FromRequest(%q): bad target %+v", raw, rt.Target)
		}
		checkCanonical(t, uri, rt.Path)
	})
}
