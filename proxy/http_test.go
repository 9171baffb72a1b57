package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/policy/authz"
	"github.com/meshd/meshd/proxy/appchannel"
)

type echo struct {
	Method     string
	RequestURI string
	Header     http.Header
	BodyLen    int
	BodySHA    string
}

// appHandler is the test app behind the callee sidecar.
func appHandler(release <-chan struct{}) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "data: two\n\n")
	})
	mux.HandleFunc("/download", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		if r.URL.Query().Get("cl") == "1" {
			w.Header().Set("Content-Length", strconv.Itoa(n))
		}
		_, _ = io.Copy(w, io.LimitReader(newPattern(), int64(n)))
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/teapot", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Tea", "earl grey")
		// An app cannot pose as a sidecar: the callee strips these.
		w.Header().Set(HeaderErrorCode, ErrCodeAppUnhealthy)
		w.Header().Set(HeaderShortCircuit, ShortCircuitUnhealthy)
		w.WriteHeader(http.StatusTeapot)
		fmt.Fprint(w, "short and stout")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		e := echo{Method: r.Method, RequestURI: r.RequestURI, Header: r.Header, BodyLen: int(n), BodySHA: hex.EncodeToString(h.Sum(nil))}
		w.Header().Set("X-App", "orders")
		w.Header().Set("Content-Type", "application/json")
		status := http.StatusOK
		if s := r.URL.Query().Get("status"); s != "" {
			status, _ = strconv.Atoi(s)
		}
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(e)
	})
	return mux
}

// pattern is a deterministic byte stream.
type pattern struct{ i byte }

func newPattern() *pattern { return &pattern{} }
func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = p.i
		p.i = p.i*31 + 7
	}
	return len(b), nil
}

func patternSHA(n int) string {
	h := sha256.New()
	_, _ = io.Copy(h, io.LimitReader(newPattern(), int64(n)))
	return hex.EncodeToString(h.Sum(nil))
}

type env struct {
	ca      *testCA
	res     *fakeResolver
	caller  *sidecar
	orders  *sidecar
	health  *atomicHealth
	release chan struct{}
	denyAll bool
}

func newEnv(t *testing.T, mutate func(*Config)) *env {
	t.Helper()
	e := &env{ca: newCA(t, "cluster.local"), res: newResolver(), health: &atomicHealth{ok: true}, release: make(chan struct{})}
	app := httptest.NewServer(appHandler(e.release))
	t.Cleanup(app.Close)
	u, _ := url.Parse(app.URL)
	port, _ := strconv.Atoi(u.Port())
	ch, err := appchannel.New(appchannel.Config{Protocol: appchannel.HTTP, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Identity: mustIdentity(t, "orders"), Resolver: e.res, App: ch, AppHealth: e.health,
		Authorizer: authz.Func(func(ctx context.Context, r authz.Request) authz.Decision {
			if strings.HasPrefix(r.Path, "/admin") {
				return authz.Decision{Reason: "admin is off limits"}
			}
			return authz.Decision{Allow: true}
		}),
	}
	e.orders = startSidecar(t, e.ca, cfg)
	ccfg := Config{Identity: mustIdentity(t, "frontend"), Resolver: e.res}
	if mutate != nil {
		mutate(&ccfg)
	}
	e.caller = startSidecar(t, e.ca, ccfg)
	e.res.set("orders", e.orders.internal)
	return e
}

func decodeEcho(t *testing.T, resp *http.Response) echo {
	t.Helper()
	defer resp.Body.Close()
	var e echo
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("status %d, body %q: %v", resp.StatusCode, b, err)
	}
	return e
}

func TestHTTPForms(t *testing.T) {
	e := newEnv(t, nil)
	proxyClient := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(mustURL(t, e.caller.httpURL))}}
	methods := []string{"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "HEAD", "PROPFIND"}
	forms := []struct {
		name string
		do   func(method string, body io.Reader) (*http.Response, error)
	}{
		{"invoke", func(m string, body io.Reader) (*http.Response, error) {
			req, _ := http.NewRequest(m, e.caller.httpURL+"/v1.0/invoke/orders/method/api/items/7?q=1&q=2&x=%2F", body)
			req.Header.Set("X-Custom", "yes")
			return http.DefaultClient.Do(req)
		}},
		{"invoke ns", func(m string, body io.Reader) (*http.Response, error) {
			req, _ := http.NewRequest(m, e.caller.httpURL+"/v1.0/invoke/orders.default/method/api/items/7?q=1&q=2&x=%2F", body)
			req.Header.Set("X-Custom", "yes")
			return http.DefaultClient.Do(req)
		}},
		{"header", func(m string, body io.Reader) (*http.Response, error) {
			req, _ := http.NewRequest(m, e.caller.httpURL+"/api/items/7?q=1&q=2&x=%2F", body)
			req.Header.Set("X-Custom", "yes")
			req.Header.Set("dapr-app-id", "orders")
			return http.DefaultClient.Do(req)
		}},
		{"proxy", func(m string, body io.Reader) (*http.Response, error) {
			req, _ := http.NewRequest(m, "http://orders.default/api/items/7?q=1&q=2&x=%2F", body)
			req.Header.Set("X-Custom", "yes")
			return proxyClient.Do(req)
		}},
	}
	for _, f := range forms {
		for _, m := range methods {
			t.Run(f.name+"/"+m, func(t *testing.T) {
				var body io.Reader
				if m == "POST" || m == "PUT" || m == "PATCH" {
					body = strings.NewReader("hello body")
				}
				resp, err := f.do(m, body)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != 200 || resp.Header.Get("X-App") != "orders" {
					t.Fatalf("status %d, X-App %q", resp.StatusCode, resp.Header.Get("X-App"))
				}
				if m == "HEAD" {
					resp.Body.Close()
					return
				}
				got := decodeEcho(t, resp)
				if got.Method != m || got.RequestURI != "/api/items/7?q=1&q=2&x=%2F" {
					t.Errorf("app saw %s %s", got.Method, got.RequestURI)
				}
				if got.Header.Get("X-Custom") != "yes" {
					t.Errorf("custom header lost: %v", got.Header)
				}
				if got.Header.Get("Dapr-App-Id") != "" {
					t.Errorf("dapr-app-id leaked to the app")
				}
				if body != nil && got.BodySHA != sha(t, "hello body") {
					t.Errorf("body did not arrive intact: %d bytes", got.BodyLen)
				}
				if got.Header.Get(HeaderCallerAppID) != "frontend" || got.Header.Get(HeaderCallerNamespace) != "default" || got.Header.Get(HeaderCalleeAppID) != "orders" {
					t.Errorf("identity headers: %v", got.Header)
				}
			})
		}
	}
}

func sha(t *testing.T, s string) string {
	t.Helper()
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestSpoofedIdentityHeadersStripped(t *testing.T) {
	e := newEnv(t, nil)
	req, _ := http.NewRequest("GET", e.caller.httpURL+"/v1.0/invoke/orders/method/x", nil)
	req.Header.Set("Dapr-Caller-App-Id", "admin-app")
	req.Header.Set("dapr-caller-namespace", "kube-system")
	req.Header.Set("DAPR-CALLEE-APP-ID", "other")
	req.Header.Set("Dapr-Caller-Extra", "evil")
	// Underscore twins: CGI, WSGI and Rack fold them into the same
	// HTTP_DAPR_CALLER_APP_ID as the real header.
	req.Header["dapr_caller_app_id"] = []string{"evil"}
	req.Header["Dapr_Callee_App_Id"] = []string{"evil"}
	req.Header["dapr-caller_namespace"] = []string{"kube-system"}
	req.Header["Meshd_Timeout"] = []string{"1h"}
	// A hop-by-hop list must not remove the stamped headers.
	req.Header.Set("Connection", "Dapr-Caller-App-Id, Dapr-Caller-Namespace")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got := decodeEcho(t, resp)
	if v := got.Header.Values(HeaderCallerAppID); len(v) != 1 || v[0] != "frontend" {
		t.Errorf("caller app id = %v, want [frontend]", v)
	}
	if v := got.Header.Values(HeaderCallerNamespace); len(v) != 1 || v[0] != "default" {
		t.Errorf("caller namespace = %v", v)
	}
	if v := got.Header.Values(HeaderCalleeAppID); len(v) != 1 || v[0] != "orders" {
		t.Errorf("callee app id = %v", v)
	}
	if got.Header.Get("Dapr-Caller-Extra") != "" {
		t.Errorf("spoofed dapr-caller-extra reached the app")
	}
	for k, v := range got.Header {
		if strings.ContainsRune(k, '_') {
			t.Errorf("underscore twin %s: %v reached the app", k, v)
		}
	}
}

func TestStripIdentityHeaders(t *testing.T) {
	h := http.Header{
		"Dapr-Caller-App-Id":    {"x"},
		"dapr_caller_app_id":    {"x"},
		"DAPR_CALLER_NAMESPACE": {"x"},
		"Dapr-Callee_App-Id":    {"x"},
		"Dapr_callee_anything":  {"x"},
		"Meshd_Timeout":         {"1h"},
		"meshd-timeout":         {"1h"},
		"Meshd-Timeout":         {"5s"}, // the caller sidecar's own: kept
		"Dapr-App-Id":           {"kept"},
		"Dapr_Caller":           {"kept"}, // no dapr-caller- prefix
		"X_Forwarded_For":       {"kept"},
		"M":                     {"kept"},
		"":                      {"kept"},
	}
	stripIdentityHeaders(h)
	var kept []string
	for k := range h {
		kept = append(kept, k)
	}
	slices.Sort(kept)
	if want := []string{"", "Dapr-App-Id", "Dapr_Caller", "M", "Meshd-Timeout", "X_Forwarded_For"}; !slices.Equal(kept, want) {
		t.Errorf("kept %q, want %q", kept, want)
	}

	r := http.Header{"Meshd-Error-Code": {"x"}, "meshd_error_code": {"x"}, "MESHD_SHORT-CIRCUIT": {"x"},
		"Meshd-Short-Circuit": {"x"}, "Meshd-Other": {"kept"}, "Content-Type": {"kept"}, "": {"kept"}}
	stripSidecarMarks(r)
	kept = kept[:0]
	for k := range r {
		kept = append(kept, k)
	}
	slices.Sort(kept)
	if want := []string{"", "Content-Type", "Meshd-Other"}; !slices.Equal(kept, want) {
		t.Errorf("kept %q, want %q", kept, want)
	}
}

func TestStreamingBodies(t *testing.T) {
	e := newEnv(t, nil)
	const size = 10 << 20
	t.Run("chunked upload", func(t *testing.T) {
		pr, pw := io.Pipe()
		go func() {
			src := io.LimitReader(newPattern(), size)
			buf := make([]byte, 64<<10)
			for {
				n, err := src.Read(buf)
				if n > 0 {
					if _, werr := pw.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					pw.Close()
					return
				}
			}
		}()
		req, _ := http.NewRequest("POST", e.caller.httpURL+"/v1.0/invoke/orders/method/upload", pr)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got := decodeEcho(t, resp)
		if got.BodyLen != size || got.BodySHA != patternSHA(size) {
			t.Fatalf("app got %d bytes, sha %s", got.BodyLen, got.BodySHA)
		}
	})
	for _, cl := range []string{"0", "1"} {
		t.Run("download cl="+cl, func(t *testing.T) {
			resp, err := http.Get(e.caller.httpURL + "/v1.0/invoke/orders/method/download?cl=" + cl + "&n=" + strconv.Itoa(size))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			h := sha256.New()
			n, err := io.Copy(h, resp.Body)
			if err != nil || n != size || hex.EncodeToString(h.Sum(nil)) != patternSHA(size) {
				t.Fatalf("downloaded %d bytes (err %v), sha mismatch", n, err)
			}
			if cl == "1" && resp.ContentLength != size {
				t.Errorf("Content-Length = %d, want %d", resp.ContentLength, size)
			}
		})
	}
	t.Run("sse", func(t *testing.T) {
		resp, err := http.Get(e.caller.httpURL + "/v1.0/invoke/orders/method/sse")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		buf := make([]byte, 64)
		// The first event must arrive while the app is still blocked.
		n, err := io.ReadAtLeast(resp.Body, buf, len("data: one\n\n"))
		if err != nil || string(buf[:n]) != "data: one\n\n" {
			t.Fatalf("first event: %q, %v", buf[:n], err)
		}
		close(e.release)
		rest, _ := io.ReadAll(resp.Body)
		if string(rest) != "data: two\n\n" {
			t.Fatalf("second event: %q", rest)
		}
	})
}

func TestErrorContract(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Timeout = 300 * time.Millisecond })
	e.res.set("ghost") // known, no healthy endpoint
	dead := listen(t)
	deadAddr := dead.Addr().String()
	dead.Close()
	e.res.set("deadapp", deadAddr)
	tests := []struct {
		name   string
		path   string
		header map[string]string
		status int
		code   string
		body   string
	}{
		{"bad target", "/v1.0/invoke/a.b.c/method/x", nil, 400, ErrCodeMalformed, ""},
		{"bad method traversal", "/v1.0/invoke/orders/method/../../x", nil, 400, ErrCodeMalformed, ""},
		{"bad method encoded", "/v1.0/invoke/orders/method/%2e%2e/admin", nil, 400, ErrCodeMalformed, ""},
		{"bad method encoded slash", "/v1.0/invoke/orders/method/a%2Fb", nil, 400, ErrCodeMalformed, ""},
		{"bad method NUL", "/v1.0/invoke/orders/method/a%00", nil, 400, ErrCodeMalformed, ""},
		{"policy deny", "/v1.0/invoke/orders/method/admin/users", nil, 403, ErrCodePermissionDenied, "admin is off limits"},
		{"policy deny after cleaning", "/v1.0/invoke/orders/method/x/../admin", nil, 403, ErrCodePermissionDenied, ""},
		{"no app id", "/orders/1", nil, 404, ErrCodeNoAppID, ""},
		{"transport failure", "/v1.0/invoke/deadapp/method/x", nil, 502, ErrCodeTransport, ""},
		{"no healthy endpoint", "/v1.0/invoke/ghost/method/x", nil, 503, ErrCodeNoEndpoint, ""},
		{"unknown app", "/v1.0/invoke/nobody/method/x", nil, 503, ErrCodeNoEndpoint, ""},
		{"timeout", "/v1.0/invoke/orders/method/slow", nil, 504, ErrCodeTimeout, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Get(e.caller.httpURL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body errorBody
			b, _ := io.ReadAll(resp.Body)
			if err := json.Unmarshal(b, &body); err != nil {
				t.Fatalf("status %d body %q: not JSON: %v", resp.StatusCode, b, err)
			}
			if resp.StatusCode != tc.status || body.ErrorCode != tc.code || body.Message == "" || !strings.Contains(body.Message, tc.body) {
				t.Fatalf("got %d %+v, want %d %s containing %q", resp.StatusCode, body, tc.status, tc.code, tc.body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if ec := resp.Header.Get(HeaderErrorCode); ec != tc.code {
				t.Errorf("%s %q, want %q", HeaderErrorCode, ec, tc.code)
			}
		})
	}
	t.Run("app unhealthy", func(t *testing.T) {
		e.health.set(false)
		defer e.health.set(true)
		e.res.reset()
		resp, err := http.Get(e.caller.httpURL + "/v1.0/invoke/orders/method/x")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || !bytes.Contains(b, []byte(ErrCodeAppUnhealthy)) || resp.Header.Get(HeaderShortCircuit) != ShortCircuitUnhealthy {
			t.Fatalf("got %d %s %v", resp.StatusCode, b, resp.Header)
		}
		// The callee's error passes through the caller with its code.
		if got := resp.Header.Values(HeaderErrorCode); len(got) != 1 || got[0] != ErrCodeAppUnhealthy {
			t.Errorf("%s %q, want [%s]", HeaderErrorCode, got, ErrCodeAppUnhealthy)
		}
		if fail, _ := e.res.reports(); len(fail) != 1 || fail[0] != e.orders.internal {
			t.Errorf("failures reported: %v", fail)
		}
	})
	t.Run("app status passes through", func(t *testing.T) {
		resp, err := http.Get(e.caller.httpURL + "/v1.0/invoke/orders/method/teapot")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 418 || string(b) != "short and stout" || resp.Header.Get("X-Tea") != "earl grey" {
			t.Fatalf("got %d %q %v", resp.StatusCode, b, resp.Header)
		}
		for _, k := range []string{HeaderErrorCode, HeaderShortCircuit} {
			if v, ok := resp.Header[k]; ok {
				t.Errorf("the app's %s %q reached the client", k, v)
			}
		}
		resp, err = http.Get(e.caller.httpURL + "/v1.0/invoke/orders/method/x?status=500")
		if err != nil {
			t.Fatal(err)
		}
		if got := decodeEcho(t, resp); resp.StatusCode != 500 || got.RequestURI != "/x?status=500" {
			t.Fatalf("got %d %+v", resp.StatusCode, got)
		}
	})
}

func TestHealthz(t *testing.T) {
	ready := false
	e := newEnv(t, func(c *Config) { c.Ready = func() bool { return ready } })
	for _, p := range []string{"/v1.0/healthz", "/v1.0/healthz/outbound"} {
		resp, err := http.Get(e.caller.httpURL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get(HeaderErrorCode) != ErrCodeNotReady {
			t.Errorf("%s before ready: %d %s, want 503 %s", p, resp.StatusCode, resp.Header.Get(HeaderErrorCode), ErrCodeNotReady)
		}
	}
	ready = true
	for _, p := range []string{"/v1.0/healthz", "/v1.0/healthz/outbound"} {
		resp, err := http.Get(e.caller.httpURL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 204 {
			t.Errorf("%s when ready: %d, want 204", p, resp.StatusCode)
		}
	}
	// The default readiness: the SVID source has a certificate.
	resp, err := http.Get(e.orders.httpURL + "/v1.0/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Errorf("default readiness: %d", resp.StatusCode)
	}
}
