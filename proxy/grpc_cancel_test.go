package proxy

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// cancelApp blocks every UnaryCall until its context ends and reports that.
type cancelApp struct {
	grpcApp
	started, ended chan struct{}
}

func (a cancelApp) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	a.started <- struct{}{}
	select {
	case <-ctx.Done():
		a.ended <- struct{}{}
		return nil, ctx.Err()
	case <-time.After(10 * time.Second):
		return &testpb.SimpleResponse{}, nil
	}
}

// TestGRPCCancelReachesApp: a gRPC client cancelling a call through the pair
// (with and without a deadline on it) ends the call's context in the app
// behind the callee sidecar, through both sidecars' HTTP/2 servers and
// clients, and the client sees Canceled at once.
func TestGRPCCancelReachesApp(t *testing.T) {
	app := cancelApp{started: make(chan struct{}, 1), ended: make(chan struct{}, 1)}
	_, cl, _ := newGRPCEnvWith(t, app)
	for _, deadline := range []bool{false, true} {
		base := context.Background()
		if deadline {
			var cancel context.CancelFunc
			base, cancel = context.WithTimeout(base, time.Minute) // a grpc-timeout header
			defer cancel()
		}
		ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(base, "dapr-app-id", "grpcapp"))
		errc := make(chan error, 1)
		go func() {
			_, err := cl.UnaryCall(ctx, &testpb.SimpleRequest{})
			errc <- err
		}()
		select {
		case <-app.started:
		case <-time.After(5 * time.Second):
			t.Fatalf("deadline %v: the call did not reach the app", deadline)
		}
		cancel()
		select {
		case err := <-errc:
			if status.Code(err) != codes.Canceled {
				t.Errorf("deadline %v: client error %v, want Canceled", deadline, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("deadline %v: the client's call did not end", deadline)
		}
		select {
		case <-app.ended:
		case <-time.After(5 * time.Second):
			t.Fatalf("deadline %v: the app's call context did not end after the client cancelled", deadline)
		}
	}
}
