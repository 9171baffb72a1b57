package h2

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"

	"golang.org/x/net/http2"
)

// srvBenchHandler answers like a gRPC unary call: reads the request body,
// writes a 1 KiB answer and a trailer.
var srvBenchHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	var buf [2048]byte
	for {
		if _, err := r.Body.Read(buf[:]); err != nil {
			break
		}
	}
	w.Header().Set("Content-Type", "application/grpc")
	w.Header().Set("Trailer", "Grpc-Status")
	_, _ = w.Write(buf[:1024])
	w.Header().Set("Grpc-Status", "0")
})

// BenchmarkServer: one 1 KiB POST with a 1 KiB answer and a trailer, over
// h2c on loopback, from x/net's HTTP/2 client (8 goroutines per CPU, one
// connection), served by this package's server (h2) and by net/http's
// (nethttp). allocs/op and cpu-ns/op (the process's CPU time per call)
// count the client's too.
func BenchmarkServer(b *testing.B) {
	b.Run("h2", func(b *testing.B) {
		ts := srvStart(b, srvBenchHandler, false, nil)
		srvBenchRun(b, ts.addr)
	})
	b.Run("nethttp", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		hs := &http.Server{Handler: srvBenchHandler, Protocols: new(http.Protocols), HTTP2: &http.HTTP2Config{MaxReadFrameSize: srvFrameSize}}
		hs.Protocols.SetUnencryptedHTTP2(true)
		go func() { _ = hs.Serve(ln) }()
		b.Cleanup(func() { _ = hs.Close() })
		srvBenchRun(b, ln.Addr().String())
	})
}

func srvBenchRun(b *testing.B, addr string) {
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	b.Cleanup(tr.CloseIdleConnections)
	body := bytes.Repeat([]byte("x"), 1024)
	url := "http://" + addr + "/svc/Method"
	b.SetParallelism(8)
	b.ReportAllocs()
	cpu0 := srvProcessCPU()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/grpc")
			resp, err := tr.RoundTrip(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.Trailer.Get("Grpc-Status") != "0" {
				b.Errorf("trailers %v", resp.Trailer)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(srvProcessCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

// srvProcessCPU is the process's CPU time (user+system) so far, in ns: on a
// shared machine, CPU per call varies less than wall time per call.
func srvProcessCPU() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
