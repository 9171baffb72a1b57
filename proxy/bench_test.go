package proxy

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/meshd/meshd/proxy/appchannel"
)

// BenchmarkInvoke measures one call app -> caller sidecar (HTTP/1.1) ->
// mTLS HTTP/2 -> callee sidecar -> app (HTTP/1.1) and back, over loopback.
// allocs/op counts every goroutine in the process: both sidecars, the app
// and the client.
func BenchmarkInvoke(b *testing.B) {
	ca := newCA(b, "cluster.local")
	res := newResolver()
	ch := benchApp(b)
	callee := startSidecar(b, ca, Config{Identity: mustIdentity(b, "orders"), Resolver: res, App: ch})
	caller := startSidecar(b, ca, Config{Identity: mustIdentity(b, "frontend"), Resolver: res})
	res.set("orders", callee.internal)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	benchGET(b, client, caller.httpURL+"/v1.0/invoke/orders/method/api/orders/42?x=1")
}

// benchGET runs b.N GETs of url from 8 goroutines per CPU and fails the
// benchmark on an error or a status other than 200.
func benchGET(b *testing.B, client *http.Client, url string) {
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// benchApp starts the benchmarks' app (it reads the body, answers "ok")
// and returns an HTTP app channel to it.
func benchApp(b *testing.B) *appchannel.Channel {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write([]byte("ok"))
	}))
	b.Cleanup(app.Close)
	u, _ := url.Parse(app.URL)
	port, _ := strconv.Atoi(u.Port())
	ch, err := appchannel.New(appchannel.Config{Port: port})
	if err != nil {
		b.Fatal(err)
	}
	return ch
}

// BenchmarkDirect is the same app called directly, for comparison.
func BenchmarkDirect(b *testing.B) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write([]byte("ok"))
	}))
	defer app.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	benchGET(b, client, app.URL+"/api/orders/42?x=1")
}

// BenchmarkInvokePOST is BenchmarkInvoke with a 1 KiB request body, with
// the request-body progress timeout on (the default) and off: the cost of
// the timeout's wrapper on the HTTP/2 hop between the sidecars.
func BenchmarkInvokePOST(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1024)
	for _, bc := range []struct {
		name    string
		timeout time.Duration
	}{{"body-timeout", 0}, {"no-body-timeout", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			ca := newCA(b, "cluster.local")
			res := newResolver()
			ch := benchApp(b)
			callee := startSidecar(b, ca, Config{Identity: mustIdentity(b, "orders"), Resolver: res, App: ch, BodyReadTimeout: bc.timeout})
			caller := startSidecar(b, ca, Config{Identity: mustIdentity(b, "frontend"), Resolver: res, BodyReadTimeout: bc.timeout})
			res.set("orders", callee.internal)
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			url := caller.httpURL + "/v1.0/invoke/orders/method/api/orders"
			b.SetParallelism(8)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Post(url, "application/octet-stream", bytes.NewReader(body))
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}
