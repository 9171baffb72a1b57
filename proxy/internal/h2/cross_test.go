package h2

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
)

func TestCrossClientServer(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		backend := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("Trailer", "X-N")
			_, _ = w.Write(bytes.ToUpper(b))
			w.Header().Set("X-N", "done")
		}), withTLS, nil)
		var dial func(ctx context.Context, network, addr string) (net.Conn, error)
		if withTLS {
			d := &tls.Dialer{Config: backend.tls}
			dial = d.DialContext
		} else {
			var d net.Dialer
			dial = d.DialContext
		}
		tr := &Transport{DialContext: dial}
		defer tr.CloseIdleConnections()
		scheme := "http"
		if withTLS {
			scheme = "https"
		}
		// A proxy on h2.Server forwarding with the client: its request
		// body is Buffered (the inline path).
		front := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			req, _ := http.NewRequestWithContext(r.Context(), r.Method, scheme+"://"+backend.addr+r.URL.Path, r.Body)
			req.ContentLength = r.ContentLength
			req.Header = r.Header
			resp, err := tr.RoundTrip(req)
			if err != nil {
				http.Error(w, err.Error(), 502)
				return
			}
			defer resp.Body.Close()
			_, _ = io.Copy(w, resp.Body)
			for k, v := range resp.Trailer {
				w.Header()[http.TrailerPrefix+k] = v
			}
		}), false, nil)
		var d net.Dialer
		ctr := &Transport{DialContext: d.DialContext}
		defer ctr.CloseIdleConnections()
		var wg sync.WaitGroup
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, n := range []int{0, 5, 20 << 10, 3 << 20} {
					body := strings.Repeat("a", n)
					req, _ := http.NewRequest("POST", "http://"+front.addr+"/x", strings.NewReader(body))
					if n == 20<<10 {
						req.ContentLength = -1
						req.Body = io.NopCloser(strings.NewReader(body))
					}
					resp, err := ctr.RoundTrip(req)
					if err != nil {
						t.Error(err)
						return
					}
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil || string(b) != strings.ToUpper(body) || resp.Trailer.Get("X-N") != "done" {
						t.Errorf("tls=%v n=%d: %d bytes %v trailer %v status %d", withTLS, n, len(b), err, resp.Trailer, resp.StatusCode)
					}
				}
			}()
		}
		wg.Wait()
	}
}
