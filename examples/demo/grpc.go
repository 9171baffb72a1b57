package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
)

// grpcClient dials frontend's app-facing gRPC port, as frontend's app would.
func grpcClient(addr string) (*grpc.ClientConn, testpb.TestServiceClient, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, err
	}
	return cc, testpb.NewTestServiceClient(cc), nil
}

func grpcCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	return metadata.AppendToOutgoingContext(ctx, "dapr-app-id", "grpcecho", "dapr-caller-app-id", "admin"), cancel
}

func one(md metadata.MD, k string) string {
	if v := md.Get(k); len(v) == 1 {
		return v[0]
	}
	return fmt.Sprint(md.Get(k))
}

// grpcUnary makes a UnaryCall to grpcecho through frontend's sidecar; the
// server echoes the metadata it got as response headers.
func grpcUnary(ctx context.Context, addr string) (string, error) {
	cc, c, err := grpcClient(addr)
	if err != nil {
		return "", err
	}
	defer cc.Close()
	ctx, cancel := grpcCtx(ctx)
	defer cancel()
	var hdr metadata.MD
	resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 64}, grpc.Header(&hdr))
	if err != nil {
		return "", fmt.Errorf("UnaryCall: %w", err)
	}
	if resp.GetServerId() != "grpcecho-1" || len(resp.GetPayload().GetBody()) != 64 {
		return "", fmt.Errorf("answer from %q with %d bytes, want grpcecho-1 with 64", resp.GetServerId(), len(resp.GetPayload().GetBody()))
	}
	if v := hdr.Get("dapr-caller-app-id"); len(v) != 1 || v[0] != "frontend" {
		return "", fmt.Errorf("server saw dapr-caller-app-id %q, want exactly [frontend] (the demo sent a spoofed admin)", v)
	}
	if v := hdr.Get("dapr-caller-namespace"); len(v) != 1 || v[0] != namespace {
		return "", fmt.Errorf("server saw dapr-caller-namespace %q, want [%s]", v, namespace)
	}
	return fmt.Sprintf("grpc.testing.TestService/UnaryCall + metadata dapr-app-id: grpcecho → OK from %s (64-byte payload); it saw dapr-caller-app-id: %s (spoofed admin dropped)",
		resp.GetServerId(), one(hdr, "dapr-caller-app-id")), nil
}

// grpcStream makes a server-streaming and a bidi call.
func grpcStream(ctx context.Context, addr string) (string, error) {
	cc, c, err := grpcClient(addr)
	if err != nil {
		return "", err
	}
	defer cc.Close()
	ctx, cancel := grpcCtx(ctx)
	defer cancel()
	params := []*testpb.ResponseParameters{{Size: 10}, {Size: 20}, {Size: 30}}
	s, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params})
	if err != nil {
		return "", fmt.Errorf("StreamingOutputCall: %w", err)
	}
	var sizes []int
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("StreamingOutputCall: %w", err)
		}
		sizes = append(sizes, len(m.GetPayload().GetBody()))
	}
	if fmt.Sprint(sizes) != "[10 20 30]" {
		return "", fmt.Errorf("StreamingOutputCall got messages of %v bytes, want [10 20 30]", sizes)
	}
	server := one(s.Trailer(), "x-echo-server")

	b, err := c.FullDuplexCall(ctx)
	if err != nil {
		return "", fmt.Errorf("FullDuplexCall: %w", err)
	}
	for i := range 3 {
		if err := b.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: int32(i + 1)}}}); err != nil {
			return "", fmt.Errorf("FullDuplexCall send: %w", err)
		}
		m, err := b.Recv()
		if err != nil {
			return "", fmt.Errorf("FullDuplexCall recv: %w", err)
		}
		if len(m.GetPayload().GetBody()) != i+1 {
			return "", fmt.Errorf("FullDuplexCall answer %d has %d bytes, want %d", i, len(m.GetPayload().GetBody()), i+1)
		}
	}
	if err := b.CloseSend(); err != nil {
		return "", err
	}
	if _, err := b.Recv(); !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("FullDuplexCall end: %v, want EOF", err)
	}
	return fmt.Sprintf("StreamingOutputCall → 3 messages (10, 20, 30 bytes) from %s; FullDuplexCall → 3 answers to 3 requests, trailers intact", server), nil
}
