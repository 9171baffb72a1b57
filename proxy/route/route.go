package route

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/meshd/meshd/discovery"
)

// Errors. Every error returned by this package wraps exactly one of them.
var (
	// ErrNoTarget means the request names no target app (HTTP 404).
	ErrNoTarget = errors.New("route: no app id given: use /v1.0/invoke/{app}/method/{method}, the dapr-app-id header, or HTTP_PROXY form")
	// ErrBadTarget means the target app or namespace is malformed (HTTP 400).
	ErrBadTarget = errors.New("route: malformed target")
	// ErrBadMethod means the method path is malformed (HTTP 400).
	ErrBadMethod = errors.New("route: malformed method")
)

// HeaderAppID is the header (and gRPC metadata key) naming the target app.
const HeaderAppID = "Dapr-App-Id"

// InvokePrefix is the path prefix of the Dapr HTTP invoke API.
const InvokePrefix = "/v1.0/invoke/"

// MaxAppIDLength and MaxNamespaceLength bound the parts of a target.
const (
	MaxAppIDLength     = 64
	MaxNamespaceLength = 63
)

// Form says which form named the target.
type Form uint8

// Forms of a target.
const (
	FormHeader Form = iota + 1
	FormInvoke
	FormProxy
)

// Route is a parsed app-facing request.
type Route struct {
	Target discovery.Target
	// Path is the normalized, canonical escaped method path, starting with "/".
	Path string
	// Query is the raw query string, passed through untouched.
	Query string
	Form  Form
}

// ParseTarget parses "{app}" or "{app}.{ns}". A target without a namespace
// gets defaultNS. It does not allocate.
func ParseTarget(s, defaultNS string) (discovery.Target, error) {
	app, ns := s, defaultNS
	if i := strings.IndexByte(s, '.'); i >= 0 {
		app, ns = s[:i], s[i+1:]
		if strings.IndexByte(ns, '.') >= 0 {
			return discovery.Target{}, fmt.Errorf("%w %q: more than one dot (app IDs and namespaces contain none)", ErrBadTarget, s)
		}
		if ns == "" {
			return discovery.Target{}, fmt.Errorf("%w %q: empty namespace", ErrBadTarget, s)
		}
	}
	if app == "" {
		return discovery.Target{}, fmt.Errorf("%w %q: empty app id", ErrBadTarget, s)
	}
	if len(app) > MaxAppIDLength {
		return discovery.Target{}, fmt.Errorf("%w: app id longer than %d characters", ErrBadTarget, MaxAppIDLength)
	}
	if len(ns) > MaxNamespaceLength {
		return discovery.Target{}, fmt.Errorf("%w: namespace longer than %d characters", ErrBadTarget, MaxNamespaceLength)
	}
	if !validName(app) || !validName(ns) {
		return discovery.Target{}, fmt.Errorf("%w %q: only letters, digits, '-' and '_' are allowed", ErrBadTarget, s)
	}
	return discovery.Target{AppID: app, Namespace: ns}, nil
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// SplitInvoke splits an escaped path of the form
// /v1.0/invoke/{target}/method/{method...} into the raw target and the raw
// method path (which keeps its leading "/"). ok is false when p does not
// start with InvokePrefix.
func SplitInvoke(p string) (target, method string, ok bool, err error) {
	rest, found := strings.CutPrefix(p, InvokePrefix)
	if !found {
		return "", "", false, nil
	}
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return "", "", true, fmt.Errorf("%w: want %s{app}/method/{method}", ErrBadMethod, InvokePrefix)
	}
	target, rest = rest[:i], rest[i:]
	if target == "" {
		// daprd answers this like a request without an app id (404).
		return "", "", true, fmt.Errorf("%w (empty app id in %s{app}/method/{method})", ErrNoTarget, InvokePrefix)
	}
	method, found = strings.CutPrefix(rest, "/method/")
	if !found {
		return "", "", true, fmt.Errorf("%w: want %s{app}/method/{method}", ErrBadMethod, InvokePrefix)
	}
	if method == "" {
		return "", "", true, fmt.Errorf("%w: method name is empty", ErrBadMethod)
	}
	// Keep the "/" in front of the method: rest[len("/method"):].
	return target, rest[len("/method"):], true, nil
}

// FromRequest finds the target and the normalized method of an app-facing
// HTTP request. defaultNS is the namespace of a target that names none
// (the caller's own). It allocates nothing for canonical paths.
func FromRequest(r *http.Request, defaultNS string) (Route, error) {
	rawPath, query := requestPath(r)
	if rawPath == "" {
		return Route{}, fmt.Errorf("%w: request target %q has no path", ErrBadMethod, r.RequestURI)
	}
	var (
		rt     Route
		target string
		method string
		err    error
	)
	// An empty dapr-app-id header counts as none, as in daprd.
	if v, ok := r.Header[HeaderAppID]; ok && !(len(v) == 1 && v[0] == "") {
		// The same value twice (an interceptor and per-RPC credentials
		// both set it) is one target, as in daprd; different ones are
		// refused.
		for _, o := range v[1:] {
			if o != v[0] {
				return Route{}, fmt.Errorf("%w: %d different dapr-app-id headers, want 1", ErrBadTarget, len(v))
			}
		}
		target, method, rt.Form = v[0], rawPath, FormHeader
	} else if t, m, ok, serr := SplitInvoke(rawPath); ok {
		if serr != nil {
			return Route{}, serr
		}
		target, method, rt.Form = t, m, FormInvoke
	} else if isAbsoluteForm(r) {
		target, method, rt.Form = hostOnly(r.URL.Host), rawPath, FormProxy
	} else {
		return Route{}, ErrNoTarget
	}
	if rt.Target, err = ParseTarget(target, defaultNS); err != nil {
		return Route{}, err
	}
	if rt.Path, err = Normalize(method); err != nil {
		return Route{}, err
	}
	rt.Query = query
	return rt, nil
}

// requestPath returns the escaped path and raw query of r as they were on
// the wire when r came from a server (RequestURI), else from r.URL.
func requestPath(r *http.Request) (path, query string) {
	u := r.RequestURI
	if u == "" {
		return r.URL.EscapedPath(), r.URL.RawQuery
	}
	if u[0] != '/' {
		// Absolute form: scheme://authority/path?query.
		i := strings.Index(u, "://")
		if i < 0 {
			return "", "" // "*" or authority form (CONNECT)
		}
		u = u[i+3:]
		j := strings.IndexByte(u, '/')
		if j < 0 {
			if k := strings.IndexByte(u, '?'); k >= 0 {
				return "/", u[k+1:]
			}
			return "/", ""
		}
		u = u[j:]
	}
	if k := strings.IndexByte(u, '?'); k >= 0 {
		return u[:k], u[k+1:]
	}
	return u, ""
}

func isAbsoluteForm(r *http.Request) bool {
	return r.RequestURI != "" && r.RequestURI[0] != '/' && r.URL.Host != ""
}

// hostOnly strips a port from host.
func hostOnly(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		return host[:i]
	}
	return host
}

// PathQuery returns the escaped path and the raw query of r as they were on
// the wire (from RequestURI, else from r.URL), without normalizing them.
func PathQuery(r *http.Request) (path, query string) { return requestPath(r) }
