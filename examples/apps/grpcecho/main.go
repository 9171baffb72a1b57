// Command grpcecho is a sample gRPC app for meshd demos and end-to-end tests.
// It serves grpc.testing.TestService (google.golang.org/grpc/interop/grpc_testing),
// so clients can use the stubs that ship with grpc-go:
//
//   - EmptyCall, UnaryCall: unary; UnaryCall answers response_size bytes and
//     fails with response_status when that is set.
//   - StreamingOutputCall: server streaming, one message per response_parameters.
//   - StreamingInputCall: client streaming, answers the total payload size.
//   - FullDuplexCall: bidi streaming, answers each request as it arrives.
//
// Every call sends the incoming metadata back as response headers and
// trailers (plus "x-echo-server: {name}"), waits "x-echo-delay" (a Go
// duration) before answering if given, and honours deadlines. It also serves
// grpc.health.v1 (SERVING) and server reflection.
//
// Usage: grpcecho --port 9090 --name grpcecho-1
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// Metadata keys the server understands.
const (
	DelayKey  = "x-echo-delay"
	ServerKey = "x-echo-server"
)

// maxPayload bounds the payload a client may ask for.
const maxPayload = 16 << 20

type server struct {
	testpb.UnimplementedTestServiceServer
	name string
}

// echoMD returns the incoming metadata that may be sent back, plus the
// server name. Transport-level keys are left out.
func (s *server) echoMD(ctx context.Context) metadata.MD {
	in, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for k, v := range in {
		if strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") || k == "content-type" || k == "user-agent" || k == "te" {
			continue
		}
		out[k] = v
	}
	out.Set(ServerKey, s.name)
	return out
}

// delay waits for the x-echo-delay of the call, or until its deadline.
func delay(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(DelayKey)
	if len(v) == 0 {
		return nil
	}
	d, err := time.ParseDuration(v[0])
	if err != nil || d < 0 {
		return status.Errorf(codes.InvalidArgument, "grpcecho: bad %s %q", DelayKey, v[0])
	}
	return sleep(ctx, d)
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

func payload(size int32) (*testpb.Payload, error) {
	if size < 0 || size > maxPayload {
		return nil, status.Errorf(codes.InvalidArgument, "grpcecho: payload size %d not in 0..%d", size, maxPayload)
	}
	return &testpb.Payload{Body: make([]byte, size)}, nil
}

func requested(st *testpb.EchoStatus) error {
	if st == nil || st.GetCode() == 0 {
		return nil
	}
	return status.Error(codes.Code(st.GetCode()), st.GetMessage())
}

func (s *server) unaryMD(ctx context.Context) {
	md := s.echoMD(ctx)
	_ = grpc.SetHeader(ctx, md)
	_ = grpc.SetTrailer(ctx, md)
}

func (s *server) EmptyCall(ctx context.Context, _ *testpb.Empty) (*testpb.Empty, error) {
	s.unaryMD(ctx)
	if err := delay(ctx); err != nil {
		return nil, err
	}
	return &testpb.Empty{}, nil
}

func (s *server) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	s.unaryMD(ctx)
	if err := delay(ctx); err != nil {
		return nil, err
	}
	if err := requested(req.GetResponseStatus()); err != nil {
		return nil, err
	}
	p, err := payload(req.GetResponseSize())
	if err != nil {
		return nil, err
	}
	return &testpb.SimpleResponse{Payload: p, ServerId: s.name, Hostname: s.name}, nil
}

func (s *server) streamMD(ss grpc.ServerStream) error {
	md := s.echoMD(ss.Context())
	ss.SetTrailer(md)
	return ss.SendHeader(md)
}

func (s *server) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, ss grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	if err := s.streamMD(ss); err != nil {
		return err
	}
	if err := delay(ss.Context()); err != nil {
		return err
	}
	for _, rp := range req.GetResponseParameters() {
		if err := s.respond(ss, rp); err != nil {
			return err
		}
	}
	return requested(req.GetResponseStatus())
}

func (s *server) respond(ss grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse], rp *testpb.ResponseParameters) error {
	if err := sleep(ss.Context(), time.Duration(rp.GetIntervalUs())*time.Microsecond); err != nil {
		return err
	}
	p, err := payload(rp.GetSize())
	if err != nil {
		return err
	}
	return ss.Send(&testpb.StreamingOutputCallResponse{Payload: p})
}

func (s *server) StreamingInputCall(ss grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	if err := s.streamMD(ss); err != nil {
		return err
	}
	var total int32
	for {
		req, err := ss.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		total += int32(len(req.GetPayload().GetBody()))
	}
	if err := delay(ss.Context()); err != nil {
		return err
	}
	return ss.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: total})
}

func (s *server) FullDuplexCall(ss grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	if err := s.streamMD(ss); err != nil {
		return err
	}
	for {
		req, err := ss.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := requested(req.GetResponseStatus()); err != nil {
			return err
		}
		for _, rp := range req.GetResponseParameters() {
			if err := s.respond(ss, rp); err != nil {
				return err
			}
		}
	}
}

// newServer returns the gRPC server with TestService, health and reflection.
func newServer(name string) (*grpc.Server, *health.Server) {
	gs := grpc.NewServer()
	testpb.RegisterTestServiceServer(gs, &server{name: name})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("grpc.testing.TestService", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	return gs, hs
}

func main() {
	host, _ := os.Hostname()
	var (
		port = flag.Int("port", 9090, "port to listen on")
		addr = flag.String("address", "127.0.0.1", "address to listen on")
		name = flag.String("name", "grpcecho@"+host, "instance name sent back in x-echo-server")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, net.JoinHostPort(*addr, strconv.Itoa(*port)), *name); err != nil {
		slog.Error("grpcecho: " + err.Error())
		os.Exit(1)
	}
}

func run(ctx context.Context, addr, name string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("grpcecho: %w", err)
	}
	gs, hs := newServer(name)
	slog.Info("grpcecho: listening", "addr", ln.Addr().String(), "name", name)
	go func() {
		<-ctx.Done()
		hs.Shutdown() // report NOT_SERVING first
		gs.GracefulStop()
	}()
	return gs.Serve(ln)
}
