package proxy

import (
	"bytes"
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

// BenchmarkGRPCUnaryClient measures one gRPC unary call (1 KiB each way)
// grpc-go client -> caller sidecar (gRPC port) -> mTLS HTTP/2 -> callee
// sidecar -> grpc-go app, over loopback, with each HTTP/2 client of the
// sidecars: h2 (proxy/internal/h2) and nethttp (Config.NetHTTPH2Client,
// appchannel.Config.NetHTTPH2Client). allocs/op counts every goroutine in
// the process; cpu-ns/op is the process's CPU time (user and system) per
// call, which a busy machine disturbs less than ns/op.
func BenchmarkGRPCUnaryClient(b *testing.B) {
	for _, impl := range []string{"h2", "nethttp"} {
		b.Run(impl, func(b *testing.B) {
			netHTTP := impl == "nethttp"
			ca := newCA(b, "cluster.local")
			res := newResolver()
			l := listen(b)
			gs := grpc.NewServer()
			testpb.RegisterTestServiceServer(gs, grpcApp{})
			go func() { _ = gs.Serve(l) }()
			b.Cleanup(gs.Stop)
			ch, err := appchannel.New(appchannel.Config{Protocol: appchannel.GRPC, Port: l.Addr().(*net.TCPAddr).Port, NetHTTPH2Client: netHTTP})
			if err != nil {
				b.Fatal(err)
			}
			callee := startSidecar(b, ca, Config{Identity: mustIdentity(b, "grpcapp"), Resolver: res, App: ch, NetHTTPH2Client: netHTTP})
			caller := startSidecar(b, ca, Config{Identity: mustIdentity(b, "frontend"), Resolver: res, NetHTTPH2Client: netHTTP})
			res.set("grpcapp", callee.internal)
			cc, err := grpc.NewClient(caller.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { cc.Close() })
			c := testpb.NewTestServiceClient(cc)
			ctx := metadata.AppendToOutgoingContext(context.Background(), "dapr-app-id", "grpcapp")
			req := &testpb.SimpleRequest{Payload: &testpb.Payload{Body: bytes.Repeat([]byte("q"), 1024)}}
			if _, err := c.UnaryCall(ctx, req); err != nil {
				b.Fatal(err)
			}
			b.SetParallelism(8)
			b.ReportAllocs()
			var ru0, ru1 syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			b.ResetTimer()
			defer func() {
				_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
				cpu := ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
				b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
			}()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.UnaryCall(ctx, req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
