package daprapi

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
)

// BenchmarkInvokeServiceNativeGRPC is the baseline for BenchmarkInvokeService:
// the same service on grpc-go's own HTTP/2 server instead of net/http's.
func BenchmarkInvokeServiceNativeGRPC(b *testing.B) {
	srv := grpc.NewServer()
	runtimev1pb.RegisterDaprServer(srv, &service{next: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}), cfg: config{maxMessageSize: DefaultMaxMessageSize}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()
	c := rawClient(b, ln.Addr().String())
	req := &runtimev1pb.InvokeServiceRequest{Id: "orders", Message: &commonv1pb.InvokeRequest{
		Method: "orders/42", Data: &anypb.Any{Value: make([]byte, 1024)}, ContentType: "application/json",
		HttpExtension: &commonv1pb.HTTPExtension{Verb: commonv1pb.HTTPExtension_POST},
	}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.InvokeService(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}
