package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshd/meshd/proxy/appchannel"
)

// grpcApp is the gRPC test app: it echoes metadata back as headers and
// trailers and fails on request.
type grpcApp struct {
	testpb.UnimplementedTestServiceServer
}

func echoMD(ctx context.Context) (metadata.MD, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	out := metadata.Pairs("x-seen-caller", first(md["dapr-caller-app-id"]), "x-seen-custom", first(md["x-custom"]))
	if dl, ok := ctx.Deadline(); ok {
		out.Set("x-deadline", "yes", strconv.FormatInt(int64(time.Until(dl)/time.Millisecond), 10))
	}
	return out, nil
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func (grpcApp) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	md, _ := echoMD(ctx)
	_ = grpc.SetHeader(ctx, md)
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "unary"))
	if req.GetResponseStatus() != nil {
		return nil, status.Error(codes.Code(req.GetResponseStatus().GetCode()), req.GetResponseStatus().GetMessage())
	}
	if req.GetResponseSize() > 0 { // "sleep" request
		select {
		case <-time.After(time.Duration(req.GetResponseSize()) * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &testpb.SimpleResponse{Payload: req.GetPayload(), Username: "grpcapp"}, nil
}

func (grpcApp) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, s grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	for i, p := range req.GetResponseParameters() {
		if err := s.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: []byte(strconv.Itoa(i) + ":" + strconv.Itoa(int(p.GetSize())))}}); err != nil {
			return err
		}
	}
	s.SetTrailer(metadata.Pairs("x-trailer", "server-stream"))
	return nil
}

func (grpcApp) StreamingInputCall(s grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	total := 0
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			s.SetTrailer(metadata.Pairs("x-trailer", "client-stream"))
			return s.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: int32(total)})
		}
		if err != nil {
			return err
		}
		total += len(m.GetPayload().GetBody())
	}
}

func (grpcApp) FullDuplexCall(s grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	md, _ := echoMD(s.Context())
	_ = s.SendHeader(md)
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			s.SetTrailer(metadata.Pairs("x-trailer", "bidi"))
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.Send(&testpb.StreamingOutputCallResponse{Payload: m.GetPayload()}); err != nil {
			return err
		}
	}
}

func newGRPCEnv(t *testing.T) (*env, testpb.TestServiceClient) {
	t.Helper()
	e, cl, _ := newGRPCEnvWith(t, grpcApp{})
	return e, cl
}

// newGRPCEnvWith is the caller sidecar of newEnv, a callee sidecar
// ("grpcapp") in front of srv on grpc-go's server, and a grpc-go client of
// the caller's gRPC port.
func newGRPCEnvWith(t *testing.T, srv testpb.TestServiceServer) (*env, testpb.TestServiceClient, *sidecar) {
	t.Helper()
	e := newEnv(t, nil)
	l := listen(t)
	gs := grpc.NewServer()
	testpb.RegisterTestServiceServer(gs, srv)
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop)
	port := l.Addr().(*net.TCPAddr).Port
	ch, err := appchannel.New(appchannel.Config{Protocol: appchannel.GRPC, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	callee := startSidecar(t, e.ca, Config{Identity: mustIdentity(t, "grpcapp"), Resolver: e.res, App: ch})
	e.res.set("grpcapp", callee.internal)
	cc, err := grpc.NewClient(e.caller.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return e, testpb.NewTestServiceClient(cc), callee
}

func appCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, "dapr-app-id", "grpcapp", "x-custom", "c1", "dapr-caller-app-id", "spoofed")
}

func TestGRPCProxy(t *testing.T) {
	_, c := newGRPCEnv(t)
	t.Run("unary", func(t *testing.T) {
		var hdr, trl metadata.MD
		resp, err := c.UnaryCall(appCtx(t), &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("ping")}}, grpc.Header(&hdr), grpc.Trailer(&trl))
		if err != nil {
			t.Fatal(err)
		}
		if string(resp.GetPayload().GetBody()) != "ping" || resp.GetUsername() != "grpcapp" {
			t.Errorf("response %v", resp)
		}
		if first(hdr["x-seen-caller"]) != "frontend" || first(hdr["x-seen-custom"]) != "c1" {
			t.Errorf("headers %v", hdr)
		}
		if first(trl["x-trailer"]) != "unary" {
			t.Errorf("trailers %v", trl)
		}
		if first(hdr["x-deadline"]) != "yes" {
			t.Errorf("deadline did not reach the app: %v", hdr)
		}
	})
	t.Run("status code", func(t *testing.T) {
		_, err := c.UnaryCall(appCtx(t), &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "no such order: 42"}})
		if s := status.Convert(err); s.Code() != codes.NotFound || s.Message() != "no such order: 42" {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(appCtx(t), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 5000})
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("got %v, want DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("took %v", d)
		}
	})
	t.Run("server streaming", func(t *testing.T) {
		var params []*testpb.ResponseParameters
		for i := range 5 {
			params = append(params, &testpb.ResponseParameters{Size: int32(i * 10)})
		}
		s, err := c.StreamingOutputCall(appCtx(t), &testpb.StreamingOutputCallRequest{ResponseParameters: params})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			m, err := s.Recv()
			if err != nil || string(m.GetPayload().GetBody()) != strconv.Itoa(i)+":"+strconv.Itoa(i*10) {
				t.Fatalf("message %d: %v %v", i, m, err)
			}
		}
		if _, err := s.Recv(); err != io.EOF {
			t.Fatalf("end: %v", err)
		}
		if first(s.Trailer()["x-trailer"]) != "server-stream" {
			t.Errorf("trailers %v", s.Trailer())
		}
	})
	t.Run("client streaming", func(t *testing.T) {
		s, err := c.StreamingInputCall(appCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		for range 10 {
			if err := s.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, 1000)}}); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := s.CloseAndRecv()
		if err != nil || resp.GetAggregatedPayloadSize() != 10000 {
			t.Fatalf("%v %v", resp, err)
		}
		if first(s.Trailer()["x-trailer"]) != "client-stream" {
			t.Errorf("trailers %v", s.Trailer())
		}
	})
	t.Run("bidi streaming", func(t *testing.T) {
		s, err := c.FullDuplexCall(appCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		// Ping-pong: each answer must arrive before the next message is
		// sent, so nothing may be buffered on the way.
		for i := range 5 {
			msg := "m" + strconv.Itoa(i)
			if err := s.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte(msg)}}); err != nil {
				t.Fatal(err)
			}
			m, err := s.Recv()
			if err != nil || string(m.GetPayload().GetBody()) != msg {
				t.Fatalf("echo %d: %v %v", i, m, err)
			}
		}
		hdr, _ := s.Header()
		if first(hdr["x-seen-caller"]) != "frontend" {
			t.Errorf("caller identity at app: %v", hdr)
		}
		_ = s.CloseSend()
		if _, err := s.Recv(); err != io.EOF {
			t.Fatalf("end: %v", err)
		}
		if first(s.Trailer()["x-trailer"]) != "bidi" {
			t.Errorf("trailers %v", s.Trailer())
		}
	})
	t.Run("no app id", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{})
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("got %v, want Unimplemented", err)
		}
	})
	t.Run("unknown app", func(t *testing.T) {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "dapr-app-id", "nobody")
		_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("got %v, want Unavailable", err)
		}
	})
	t.Run("bad app id", func(t *testing.T) {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "dapr-app-id", "a.b.c")
		_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{})
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("got %v, want InvalidArgument", err)
		}
	})
}
