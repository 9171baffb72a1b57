package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"

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
