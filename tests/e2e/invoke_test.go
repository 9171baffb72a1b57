package e2e_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// form is one of the three ways an app names its target over HTTP.
type form struct {
	name   string
	client *http.Client
	// url builds the request URL for target ("orders" or "orders.default")
	// and method path ("/items/42?q=1").
	url    func(target, pathQuery string) string
	header func(target string) http.Header
}

func forms(m *mesh) []form {
	base := m.frontend.HTTPURL()
	proxyURL, _ := url.Parse(base)
	proxyClient := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}, Timeout: 60 * time.Second}
	return []form{
		{name: "invoke", url: func(target, pq string) string { return base + "/v1.0/invoke/" + target + "/method" + pq }},
		{name: "header", url: func(_, pq string) string { return base + pq },
			header: func(target string) http.Header { return http.Header{"Dapr-App-Id": {target}} }},
		{name: "proxy", client: proxyClient, url: func(target, pq string) string { return "http://" + target + pq }},
	}
}

func (f form) do(t testing.TB, method, target, pq string, h http.Header, body io.Reader) result {
	t.Helper()
	hh := http.Header{}
	for k, v := range h {
		hh[k] = v
	}
	if f.header != nil {
		for k, v := range f.header(target) {
			hh[k] = v
		}
	}
	return do(t, f.client, method, f.url(target, pq), hh, body)
}

// testInvoke is bullet 1: HTTP service invocation in all three forms.
func testInvoke(t *testing.T, m *mesh) {
	methods := []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions}
	for _, f := range forms(m) {
		for _, target := range []string{appOrders, appOrders + ".default"} {
			t.Run(f.name+"/"+target, func(t *testing.T) {
				t.Parallel()
				for _, method := range methods {
					t.Run(method, func(t *testing.T) {
						body := "payload of " + method + " via " + f.name
						var rd io.Reader
						if method != http.MethodGet && method != http.MethodHead && method != http.MethodOptions {
							rd = strings.NewReader(body)
						} else {
							body = ""
						}
						h := http.Header{"X-Custom": {"custom value"}, "X-Multi": {"a", "b"}, "Accept": {"application/json"}}
						r := f.do(t, method, target, "/items/42?q=1&x=a%20b&x=c", h, rd)
						if method == http.MethodHead {
							if r.status != http.StatusOK || len(r.body) != 0 || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
								t.Fatalf("HEAD: status %d, content-type %q, %d body bytes; want 200, application/json, none",
									r.status, r.header.Get("Content-Type"), len(r.body))
							}
							return
						}
						e := decodeEcho(t, r)
						sum := sha256.Sum256([]byte(body))
						for _, c := range []struct{ what, got, want string }{
							{"instance", e.Name, "orders-1"},
							{"method", e.Method, method},
							{"path", e.Path, "/items/42"},
							{"query", e.RawQuery, "q=1&x=a%20b&x=c"},
							{"X-Custom", strings.Join(e.Headers["X-Custom"], "|"), "custom value"},
							{"X-Multi", strings.Join(e.Headers["X-Multi"], "|"), "a|b"},
							{"Accept", strings.Join(e.Headers["Accept"], "|"), "application/json"},
							{"body length", strconv.FormatInt(e.BodyLength, 10), strconv.Itoa(len(body))},
							{"body sha256", e.BodySHA256, hex.EncodeToString(sum[:])},
							{"dapr-app-id seen by app", strings.Join(e.Headers["Dapr-App-Id"], "|"), ""},
						} {
							if c.got != c.want {
								t.Errorf("%s: app saw %q, want %q", c.what, c.got, c.want)
							}
						}
					})
				}
			})
		}
	}

	t.Run("StatusPassthrough", func(t *testing.T) {
		t.Parallel()
		for _, f := range forms(m) {
			for _, code := range []int{200, 201, 202, 301, 400, 404, 418, 429, 500, 502, 503, 504} {
				r := f.do(t, http.MethodGet, appOrders, "/status/"+strconv.Itoa(code), nil, nil)
				var got struct {
					Name   string `json:"name"`
					Status int    `json:"status"`
				}
				if r.status != code {
					t.Errorf("%s /status/%d: got %d; body %s", f.name, code, r.status, r.body)
					continue
				}
				if err := json.Unmarshal(r.body, &got); err != nil || got.Name != "orders-1" || got.Status != code {
					t.Errorf("%s /status/%d: body %s is not the app's (%v)", f.name, code, r.body, err)
				}
				if v := r.header.Get("Meshd-Error-Code"); v != "" {
					t.Errorf("%s /status/%d: app answer carries Meshd-Error-Code %q", f.name, code, v)
				}
			}
		}
	})

	t.Run("Upload10MB", func(t *testing.T) {
		t.Parallel()
		data := make([]byte, 10<<20)
		_, _ = rand.Read(data)
		sum := sha256.Sum256(data)
		for _, f := range forms(m) {
			for _, chunked := range []bool{false, true} {
				var rd io.Reader = bytes.NewReader(data)
				if chunked {
					rd = io.MultiReader(rd) // unknown length: streamed with chunked encoding
				}
				r := f.do(t, http.MethodPost, appOrders, "/upload", http.Header{"Content-Type": {"application/octet-stream"}}, rd)
				var got struct {
					Bytes  int64  `json:"bytes"`
					SHA256 string `json:"sha256"`
				}
				if r.status != http.StatusOK || json.Unmarshal(r.body, &got) != nil {
					t.Fatalf("%s chunked=%v: %d %s", f.name, chunked, r.status, r.body)
				}
				if got.Bytes != int64(len(data)) || got.SHA256 != hex.EncodeToString(sum[:]) {
					t.Errorf("%s chunked=%v: app got %d bytes sha %s, want %d bytes sha %x", f.name, chunked, got.Bytes, got.SHA256, len(data), sum)
				}
			}
		}
	})

	t.Run("AppAnswersBeforeReadingUpload", func(t *testing.T) {
		t.Parallel()
		data := make([]byte, 10<<20)
		for _, f := range forms(m) {
			r := f.do(t, http.MethodPost, appOrders, "/status/201", nil, bytes.NewReader(data))
			if r.status != http.StatusCreated || !strings.Contains(string(r.body), `"orders-1"`) {
				t.Errorf("%s: %d %s, want the app's 201", f.name, r.status, r.body)
			}
			if e := decodeEcho(t, f.do(t, http.MethodGet, appOrders, "/after-early-answer", nil, nil)); e.Path != "/after-early-answer" {
				t.Errorf("%s: next call reached %q", f.name, e.Path)
			}
		}
	})

	t.Run("Download10MB", func(t *testing.T) {
		t.Parallel()
		const n = 10485760
		for _, f := range forms(m) {
			hh := http.Header{}
			if f.header != nil {
				hh = f.header(appOrders)
			}
			req, _ := http.NewRequest(http.MethodGet, f.url(appOrders, "/download?bytes="+strconv.Itoa(n)), nil)
			req.Header = hh
			c := f.client
			if c == nil {
				c = plainClient
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || got != n {
				t.Errorf("%s: status %d, %d bytes, err %v; want 200, %d bytes", f.name, resp.StatusCode, got, err, n)
			}
			if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(n) {
				t.Errorf("%s: Content-Length %q, want %d", f.name, cl, n)
			}
		}
	})

	t.Run("SSE", func(t *testing.T) {
		t.Parallel()
		for _, f := range forms(m) {
			testSSE(t, f, m)
		}
	})
}

// testSSE checks that server-sent events arrive one by one: the first event
// is read before the app has sent the last one.
func testSSE(t *testing.T, f form, m *mesh) {
	const n, interval = 5, 250 * time.Millisecond
	req, _ := http.NewRequest(http.MethodGet, f.url(appOrders, "/sse?n="+strconv.Itoa(n)+"&interval="+interval.String()), nil)
	if f.header != nil {
		req.Header = f.header(appOrders)
	}
	c := f.client
	if c == nil {
		c = plainClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%s: %d %q", f.name, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	type event struct {
		Seq  int       `json:"seq"`
		Sent time.Time `json:"time"`
	}
	var (
		events  []event
		arrived []time.Time
	)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		var e event
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			t.Fatalf("%s: event %q: %v", f.name, data, err)
		}
		events = append(events, e)
		arrived = append(arrived, time.Now())
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("%s: reading events: %v", f.name, err)
	}
	if len(events) != n {
		t.Fatalf("%s: %d events, want %d", f.name, len(events), n)
	}
	for i, e := range events {
		if e.Seq != i {
			t.Fatalf("%s: event %d has seq %d", f.name, i, e.Seq)
		}
	}
	// Each event must be read before the app sent the next one plus a
	// margin: a buffering proxy would deliver all at the end.
	for i := 0; i < n-1; i++ {
		if !arrived[i].Before(events[i+1].Sent) {
			t.Errorf("%s: event %d arrived at %s, after event %d was sent at %s: not streamed",
				f.name, i, arrived[i].Format(time.StampMicro), i+1, events[i+1].Sent.Local().Format(time.StampMicro))
		}
	}
}

// testCallerIdentity is bullet 2: the callee sees the identity of the
// caller's certificate, never the caller's own dapr-caller-* headers.
func testCallerIdentity(t *testing.T, m *mesh) {
	spoof := http.Header{
		"Dapr-Caller-App-Id":    {"admin"},
		"Dapr-Caller-Namespace": {"kube-system"},
		"Dapr-Callee-App-Id":    {"billing"},
	}
	for _, f := range forms(m) {
		for _, withSpoof := range []bool{false, true} {
			var h http.Header
			if withSpoof {
				h = spoof
			}
			e := decodeEcho(t, f.do(t, http.MethodPost, appOrders, "/whoami", h, strings.NewReader("x")))
			for _, c := range []struct{ key, want string }{
				{"Dapr-Caller-App-Id", appFrontend},
				{"Dapr-Caller-Namespace", "default"},
				{"Dapr-Callee-App-Id", appOrders},
			} {
				if got := e.Headers[c.key]; len(got) != 1 || got[0] != c.want {
					t.Errorf("%s spoof=%v: callee saw %s %q, want exactly [%q]", f.name, withSpoof, c.key, got, c.want)
				}
			}
		}
	}
	// Mixed-case and lower-case spellings on the wire (raw HTTP/1.1).
	r := rawHTTP(t, hostPort(m.frontend.HTTPURL()), http.MethodGet, "/v1.0/invoke/orders/method/whoami",
		"dapr-caller-app-id: admin", "DAPR-CALLER-NAMESPACE: kube-system", "dApR-CaLlEe-ApP-iD: billing")
	e := decodeEcho(t, r)
	if e.CallerAppID != appFrontend || e.CallerNamespace != "default" || e.CalleeAppID != appOrders ||
		len(e.Headers["Dapr-Caller-App-Id"]) != 1 || len(e.Headers["Dapr-Caller-Namespace"]) != 1 || len(e.Headers["Dapr-Callee-App-Id"]) != 1 {
		t.Errorf("raw spoof: callee saw caller %q ns %q callee %q (headers %v)", e.CallerAppID, e.CallerNamespace, e.CalleeAppID, e.Headers)
	}
}
