package hardening_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestLimits is issue #11 item 5: header fields are counted and request
// bodies must make progress, on the app-facing port and on the internal
// mTLS port, over HTTP/1.1 and HTTP/2.
func TestLimits(t *testing.T) {
	p := startPair(t)
	invoke := "/v1.0/invoke/spy/method/x"

	t.Run("TooManyHeaderFields", func(t *testing.T) {
		const n = 10000
		check := func(t *testing.T, what string, resp *http.Response, body []byte, took time.Duration, before int64) {
			t.Helper()
			checkError(t, what, resp, body, http.StatusRequestHeaderFieldsTooLarge, "ERR_HEADERS_TOO_LARGE")
			if took > 2*time.Second {
				t.Errorf("%s: answered after %s", what, took)
			}
			if got := p.spy.hits.Load(); got != before {
				t.Errorf("%s: the app received %d request(s)", what, got-before)
			}
		}
		t.Run("AppFacingHTTP1", func(t *testing.T) {
			before := p.spy.hits.Load()
			c := dialTCP(t, hostPort(p.caller.HTTPURL()))
			resp, body, took := rawExchange(t, c, "GET "+invoke+" HTTP/1.1\r\nHost: x\r\n"+manyFields(n)+"\r\n", "", 0, 10*time.Second)
			check(t, "app-facing HTTP/1.1", resp, body, took, before)
		})
		t.Run("AppFacingH2C", func(t *testing.T) {
			before := p.spy.hits.Load()
			tr := &http.Transport{Protocols: new(http.Protocols)}
			tr.Protocols.SetUnencryptedHTTP2(true)
			defer tr.CloseIdleConnections()
			resp, body, took := do(t, tr, http.MethodGet, p.caller.HTTPURL()+invoke, fieldsHeader(n), nil)
			check(t, "app-facing h2c", resp, body, took, before)
		})
		t.Run("InternalHTTP1", func(t *testing.T) {
			before := p.spy.hits.Load()
			c := dialTLS(t, p.callee.Ports.InternalAddr(), genuineTLS(t, p.sentry, "intruder", "spy", "http/1.1"))
			resp, body, took := rawExchange(t, c, "GET /x HTTP/1.1\r\nHost: x\r\n"+manyFields(n)+"\r\n", "", 0, 10*time.Second)
			check(t, "internal HTTP/1.1", resp, body, took, before)
		})
		t.Run("InternalHTTP2", func(t *testing.T) {
			before := p.spy.hits.Load()
			tr := &http.Transport{TLSClientConfig: genuineTLS(t, p.sentry, "intruder", "spy", "h2"), Protocols: new(http.Protocols)}
			tr.Protocols.SetHTTP2(true)
			defer tr.CloseIdleConnections()
			resp, body, took := do(t, tr, http.MethodGet, "https://"+p.callee.Ports.InternalAddr()+"/x", fieldsHeader(n), nil)
			check(t, "internal HTTP/2", resp, body, took, before)
		})
		// Control: a request at the limit (Host and 99 more) goes through
		// both sidecars, and the app gets a bounded number of fields.
		t.Run("AtTheLimitPasses", func(t *testing.T) {
			c := dialTCP(t, hostPort(p.caller.HTTPURL()))
			resp, body, _ := rawExchange(t, c, "GET "+invoke+" HTTP/1.1\r\nHost: x\r\n"+manyFields(99)+"\r\n", "", 0, 10*time.Second)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("100 fields: %s %s", resp.Status, body)
			}
			if m := p.spy.maxFields.Load(); m > 100+16 {
				t.Errorf("the app received a request with %d header fields", m)
			}
		})
	})

	t.Run("BodyTrickle", func(t *testing.T) {
		// One byte a second: progress, but far below 1 KiB per timeout.
		trickle := strings.Repeat("x", 100)
		check := func(t *testing.T, what string, resp *http.Response, body []byte, took time.Duration) {
			t.Helper()
			checkError(t, what, resp, body, http.StatusRequestTimeout, "ERR_BODY_TIMEOUT")
			if took < bodyTimeout-200*time.Millisecond || took > bodyTimeout+3*time.Second {
				t.Errorf("%s: answered after %s; the timeout is %s", what, took.Round(time.Millisecond), bodyTimeout)
			}
		}
		t.Run("AppFacingContentLength", func(t *testing.T) {
			c := dialTCP(t, hostPort(p.caller.HTTPURL()))
			resp, body, took := rawExchange(t, c, "POST "+invoke+" HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", trickle, time.Second, 15*time.Second)
			check(t, "app-facing, Content-Length", resp, body, took)
		})
		t.Run("AppFacingChunked", func(t *testing.T) {
			c := dialTCP(t, hostPort(p.caller.HTTPURL()))
			resp, body, took := rawExchange(t, c, "POST "+invoke+" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n", trickle, time.Second, 15*time.Second)
			check(t, "app-facing, chunked", resp, body, took)
		})
		t.Run("InternalHTTP1", func(t *testing.T) {
			c := dialTLS(t, p.callee.Ports.InternalAddr(), genuineTLS(t, p.sentry, "intruder", "spy", "http/1.1"))
			resp, body, took := rawExchange(t, c, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", trickle, time.Second, 15*time.Second)
			check(t, "internal HTTP/1.1", resp, body, took)
		})
		t.Run("InternalHTTP2", func(t *testing.T) {
			tr := &http.Transport{TLSClientConfig: genuineTLS(t, p.sentry, "intruder", "spy", "h2"), Protocols: new(http.Protocols)}
			tr.Protocols.SetHTTP2(true)
			defer tr.CloseIdleConnections()
			pr, pw := io.Pipe()
			defer pw.Close()
			go func() {
				for range 100 {
					if _, err := pw.Write([]byte("x")); err != nil {
						return
					}
					time.Sleep(time.Second)
				}
			}()
			resp, body, took := do(t, tr, http.MethodPost, "https://"+p.callee.Ports.InternalAddr()+"/x", nil, pr)
			check(t, "internal HTTP/2", resp, body, took)
		})
	})

	// Control: a normal upload of 8 MiB at full speed passes, through both
	// sidecars, whole.
	t.Run("UploadPasses", func(t *testing.T) {
		data := make([]byte, 8<<20)
		_, _ = rand.Read(data)
		before := p.spy.hits.Load()
		resp, body, took := do(t, http.DefaultTransport, http.MethodPost, p.caller.HTTPURL()+"/v1.0/invoke/spy/method/upload", nil, bytes.NewReader(data))
		var got struct{ Bytes int64 }
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &got) != nil || got.Bytes != int64(len(data)) {
			t.Fatalf("8 MiB upload: %s %s after %s", resp.Status, body, took)
		}
		if p.spy.hits.Load() != before+1 {
			t.Fatalf("the app got %d requests", p.spy.hits.Load()-before)
		}
	})
}

// fieldsHeader is n header fields X-Field-i: v.
func fieldsHeader(n int) http.Header {
	h := make(http.Header, n)
	for i := range n {
		h["X-Field-"+itoa(i)] = []string{"v"}
	}
	return h
}

// do sends one request with rt and reads the whole answer.
func do(t *testing.T, rt http.RoundTripper, method, url string, h http.Header, body io.Reader) (*http.Response, []byte, time.Duration) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	start := time.Now()
	c := &http.Client{Transport: rt, Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v (after %s)", method, url, err, time.Since(start).Round(time.Millisecond))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read answer: %v", method, url, err)
	}
	return resp, b, time.Since(start)
}
