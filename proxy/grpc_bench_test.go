package proxy

import (
	"context"
	"net"
	"syscall"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/meshd/meshd/proxy/appchannel"
)

// processCPU is the process's CPU time (user+system) so far, in ns: on a
// shared machine, CPU per call varies less than wall time per call.
func processCPU() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkGRPCUnary measures one unary gRPC call (1 KiB each way) grpc-go
// client -> caller sidecar's gRPC port (h2c) -> mTLS HTTP/2 -> callee
// sidecar -> grpc-go app (h2c) and back, over loopback, with each HTTP/2
// server: proxy/internal/h2's (h2) and net/http's (nethttp), with and
// without coalescing the gRPC port's writes. allocs/op counts every
// goroutine in the process: both sidecars, the app and the client, and so
// does cpu-ns/op (the process's CPU time per call).
func BenchmarkGRPCUnary(b *testing.B) {
	for _, v := range []struct {
		name     string
		netHTTP  bool
		coalesce bool
	}{{"h2", false, false}, {"h2+coalesce", false, true}, {"nethttp", true, true}} {
		b.Run(v.name, func(b *testing.B) {
			defer func(c bool) { h2Coalesce = c }(h2Coalesce)
			h2Coalesce = v.coalesce
			ca := newCA(b, "cluster.local")
			res := newResolver()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			gs := grpc.NewServer()
			testpb.RegisterTestServiceServer(gs, grpcApp{})
			go func() { _ = gs.Serve(ln) }()
			b.Cleanup(gs.Stop)
			port := ln.Addr().(*net.TCPAddr).Port
			ch, err := appchannel.New(appchannel.Config{Protocol: appchannel.GRPC, Port: port})
			if err != nil {
				b.Fatal(err)
			}
			callee := startSidecar(b, ca, Config{Identity: mustIdentity(b, "grpcapp"), Resolver: res, App: ch, NetHTTPH2Server: v.netHTTP})
			caller := startSidecar(b, ca, Config{Identity: mustIdentity(b, "frontend"), Resolver: res, NetHTTPH2Server: v.netHTTP})
			res.set("grpcapp", callee.internal)
			cc, err := grpc.NewClient(caller.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = cc.Close() })
			cl := testpb.NewTestServiceClient(cc)
			ctx := metadata.AppendToOutgoingContext(context.Background(), "dapr-app-id", "grpcapp")
			req := &testpb.SimpleRequest{Payload: &testpb.Payload{Body: make([]byte, 1024)}}
			if _, err := cl.UnaryCall(ctx, req); err != nil {
				b.Fatal(err)
			}
			b.SetParallelism(8)
			b.ReportAllocs()
			cpu0 := processCPU()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := cl.UnaryCall(ctx, req); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}
