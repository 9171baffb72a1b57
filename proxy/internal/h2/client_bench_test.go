package h2

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"

	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/meshd/meshd/proxy/internal/coalesce"
)

// clientBenchTransports are the two clients under comparison, over h2c
// with coalesced writes (as the sidecar dials).
func clientBenchTransports() map[string]http.RoundTripper {
	var d net.Dialer
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return coalesce.New(c), nil
	}
	nt := &http.Transport{DialContext: dial, Protocols: new(http.Protocols), HTTP2: &http.HTTP2Config{MaxReadFrameSize: 16 << 10}}
	nt.Protocols.SetUnencryptedHTTP2(true)
	return map[string]http.RoundTripper{
		"h2":      &Transport{DialContext: dial},
		"nethttp": nt,
	}
}

// benchCalls runs b.N calls of 1 KiB (request and answer), 8 at a time.
func clientBenchCalls(b *testing.B, rt http.RoundTripper, url string, body []byte, hdr http.Header) {
	b.ReportAllocs()
	b.SetParallelism(4) // 2 CPUs x 4
	cpu := clientCPUTime()
	b.ResetTimer()
	defer func() { b.ReportMetric(float64(clientCPUTime()-cpu)/float64(b.N), "cpu-ns/op") }()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 4<<10)
		for pb.Next() {
			req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
			req.Header = hdr
			resp, err := rt.RoundTrip(req)
			if err != nil {
				b.Error(err)
				return
			}
			for {
				_, err := resp.Body.Read(buf)
				if err != nil {
					break
				}
			}
			_ = resp.Body.Close()
		}
	})
}

// clientCPUTime is the process's CPU time (user and system) in ns: per
// call, a measure a busy machine disturbs less than wall time.
func clientCPUTime() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkClientNetHTTPServer: our client and net/http's, against net/http's
// h2c server, 1 KiB each way.
func BenchmarkClientNetHTTPServer(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	answer := bytes.Repeat([]byte("a"), 1024)
	s := &http.Server{Protocols: p, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write(answer)
	})}
	go func() { _ = s.Serve(ln) }()
	defer s.Close()
	body := bytes.Repeat([]byte("q"), 1024)
	for name, rt := range clientBenchTransports() {
		b.Run(name, func(b *testing.B) {
			clientBenchCalls(b, rt, "http://"+ln.Addr().String()+"/", body, http.Header{"Content-Type": {"application/octet-stream"}})
			rt.(interface{ CloseIdleConnections() }).CloseIdleConnections()
		})
	}
}

// BenchmarkClientGRPCServer: our client and net/http's, gRPC unary calls
// (1 KiB payload) to grpc-go's server.
func BenchmarkClientGRPCServer(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer()
	testpb.RegisterTestServiceServer(srv, &clientGRPCApp{})
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()
	body := clientGRPCFrame(&testpb.SimpleRequest{Payload: &testpb.Payload{Body: bytes.Repeat([]byte("q"), 1024)}})
	hdr := http.Header{"Content-Type": {"application/grpc"}, "Te": {"trailers"}}
	for name, rt := range clientBenchTransports() {
		b.Run(name, func(b *testing.B) {
			clientBenchCalls(b, rt, "http://"+ln.Addr().String()+"/grpc.testing.TestService/UnaryCall", body, hdr)
			rt.(interface{ CloseIdleConnections() }).CloseIdleConnections()
		})
	}
}
