package main

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs, _ := newServer("g1")
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestUnary(t *testing.T) {
	c := testpb.NewTestServiceClient(dial(t))
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-request-id", "r1", "dapr-caller-app-id", "front")
	var hdr, trl metadata.MD
	resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 10}, grpc.Header(&hdr), grpc.Trailer(&trl))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetPayload().GetBody()) != 10 || resp.GetServerId() != "g1" {
		t.Errorf("response = %v", resp)
	}
	for _, md := range []metadata.MD{hdr, trl} {
		if md.Get("x-request-id")[0] != "r1" || md.Get("dapr-caller-app-id")[0] != "front" || md.Get(ServerKey)[0] != "g1" {
			t.Errorf("metadata not echoed: %v", md)
		}
	}
	_, err = c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "nope"}})
	if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "nope" {
		t.Errorf("requested status: %v", err)
	}
	if _, err := c.EmptyCall(ctx, &testpb.Empty{}); err != nil {
		t.Error(err)
	}
}

func TestDeadline(t *testing.T) {
	c := testpb.NewTestServiceClient(dial(t))
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), DelayKey, "10s"), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.UnaryCall(ctx, &testpb.SimpleRequest{}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("err = %v, want DeadlineExceeded", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Error("deadline not honoured")
	}
	ctx2 := metadata.AppendToOutgoingContext(context.Background(), DelayKey, "bogus")
	if _, err := c.UnaryCall(ctx2, &testpb.SimpleRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad delay: err = %v", err)
	}
}

func TestStreams(t *testing.T) {
	c := testpb.NewTestServiceClient(dial(t))
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-k", "v")

	// server streaming
	ss, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{
		{Size: 1}, {Size: 2, IntervalUs: 1000}, {Size: 3},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for {
		r, err := ss.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(r.GetPayload().GetBody()))
	}
	if len(sizes) != 3 || sizes[2] != 3 || ss.Trailer().Get("x-k")[0] != "v" {
		t.Errorf("server stream sizes %v trailer %v", sizes, ss.Trailer())
	}

	// client streaming
	cs, err := c.StreamingInputCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{5, 7, 11} {
		if err := cs.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, n)}}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := cs.CloseAndRecv()
	if err != nil || resp.GetAggregatedPayloadSize() != 23 {
		t.Errorf("client stream: %v %v", resp, err)
	}

	// bidi
	bs, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := bs.Header()
	if err != nil || hdr.Get(ServerKey)[0] != "g1" {
		t.Fatalf("bidi header %v %v", hdr, err)
	}
	for i := 1; i <= 3; i++ {
		if err := bs.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: int32(i)}}}); err != nil {
			t.Fatal(err)
		}
		r, err := bs.Recv()
		if err != nil || len(r.GetPayload().GetBody()) != i {
			t.Fatalf("bidi round %d: %v %v", i, r, err)
		}
	}
	if err := bs.Send(&testpb.StreamingOutputCallRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.Aborted), Message: "stop"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := bs.Recv(); status.Code(err) != codes.Aborted {
		t.Errorf("bidi requested status: %v", err)
	}
}

func TestHealth(t *testing.T) {
	h := healthpb.NewHealthClient(dial(t))
	resp, err := h.Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health = %v %v", resp, err)
	}
}
