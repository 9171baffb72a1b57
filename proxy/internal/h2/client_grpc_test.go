package h2

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// clientGRPCApp is grpc-go's interop TestService, the server under test.
type clientGRPCApp struct {
	testpb.UnimplementedTestServiceServer
	ended chan error // each handler's end (streaming calls)
}

func (a *clientGRPCApp) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "unary"))
	if s := req.GetResponseStatus(); s != nil {
		return nil, status.Error(codes.Code(s.GetCode()), s.GetMessage())
	}
	if req.GetResponseSize() > 0 { // a sleep, in ms
		select {
		case <-time.After(time.Duration(req.GetResponseSize()) * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &testpb.SimpleResponse{Payload: req.GetPayload(), Username: "app"}, nil
}

func (a *clientGRPCApp) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, s grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	for _, p := range req.GetResponseParameters() {
		if err := s.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: bytes.Repeat([]byte("s"), int(p.GetSize()))}}); err != nil {
			return err
		}
	}
	return nil
}

func (a *clientGRPCApp) StreamingInputCall(s grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	total := 0
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return s.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: int32(total)})
		}
		if err != nil {
			return err
		}
		total += len(m.GetPayload().GetBody())
	}
}

func (a *clientGRPCApp) FullDuplexCall(s grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	for {
		m, err := s.Recv()
		if err != nil {
			if a.ended != nil {
				a.ended <- err
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := s.Send(&testpb.StreamingOutputCallResponse{Payload: m.GetPayload()}); err != nil {
			return err
		}
	}
}

type clientGRPCEnv struct {
	srv  *grpc.Server
	app  *clientGRPCApp
	tr   *Transport
	base string
}

func clientNewGRPCEnv(t *testing.T) *clientGRPCEnv {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &clientGRPCEnv{
		srv:  grpc.NewServer(grpc.MaxRecvMsgSize(32<<20), grpc.MaxSendMsgSize(32<<20)),
		app:  &clientGRPCApp{ended: make(chan error, 16)},
		base: "http://" + ln.Addr().String(),
	}
	testpb.RegisterTestServiceServer(e.srv, e.app)
	go func() { _ = e.srv.Serve(ln) }()
	var d net.Dialer
	e.tr = &Transport{DialContext: d.DialContext}
	t.Cleanup(func() {
		e.tr.CloseIdleConnections()
		e.srv.Stop()
	})
	return e
}

func clientGRPCFrame(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	out := make([]byte, 5+len(b))
	binary.BigEndian.PutUint32(out[1:], uint32(len(b)))
	copy(out[5:], b)
	return out
}

func clientGRPCRead(r io.Reader, m proto.Message) error {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return err
	}
	b := make([]byte, binary.BigEndian.Uint32(h[1:]))
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	return proto.Unmarshal(b, m)
}

// call starts a gRPC call of method with body.
func (e *clientGRPCEnv) call(ctx context.Context, method string, body io.Reader, hdr ...string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", e.base+"/grpc.testing.TestService/"+method, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return e.tr.RoundTrip(req)
}

// grpcStatus is the call's status: trailers, or headers of a
// trailers-only answer.
func clientGRPCStatus(resp *http.Response) string {
	if v := resp.Trailer.Get("Grpc-Status"); v != "" {
		return v
	}
	return resp.Header.Get("Grpc-Status")
}

func TestClientGRPCUnary(t *testing.T) {
	clientNoLeak(t)
	e := clientNewGRPCEnv(t)
	ctx := context.Background()
	for _, size := range []int{0, 10, 100 << 10, 5 << 20} { // the last beyond every window
		payload := bytes.Repeat([]byte{'p'}, size)
		resp, err := e.call(ctx, "UnaryCall", bytes.NewReader(clientGRPCFrame(&testpb.SimpleRequest{Payload: &testpb.Payload{Body: payload}})))
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		var out testpb.SimpleResponse
		if err := clientGRPCRead(resp.Body, &out); err != nil {
			t.Fatalf("size %d: read: %v", size, err)
		}
		if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
			t.Fatalf("size %d: after the message: %q %v", size, rest, err)
		}
		_ = resp.Body.Close()
		if !bytes.Equal(out.GetPayload().GetBody(), payload) || out.GetUsername() != "app" {
			t.Fatalf("size %d: wrong answer (%d bytes)", size, len(out.GetPayload().GetBody()))
		}
		if clientGRPCStatus(resp) != "0" || resp.Trailer.Get("X-Trailer") != "unary" {
			t.Fatalf("size %d: trailers %v", size, resp.Trailer)
		}
	}
	// An error status, trailers-only.
	resp, err := e.call(ctx, "UnaryCall", bytes.NewReader(clientGRPCFrame(&testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: 5, Message: "nope"}})))
	if err != nil {
		t.Fatal(err)
	}
	clientReadAll(t, resp)
	if clientGRPCStatus(resp) != "5" {
		t.Fatalf("status %q, want 5 (headers %v trailers %v)", clientGRPCStatus(resp), resp.Header, resp.Trailer)
	}
	// The deadline travels as grpc-timeout: the server ends the call.
	start := time.Now()
	resp, err = e.call(ctx, "UnaryCall", bytes.NewReader(clientGRPCFrame(&testpb.SimpleRequest{ResponseSize: 5000})), "Grpc-Timeout", "50m")
	// grpc-go answers DEADLINE_EXCEEDED, or resets the stream (CANCEL).
	if err == nil {
		clientReadAll(t, resp)
		if got := clientGRPCStatus(resp); got != strconv.Itoa(int(codes.DeadlineExceeded)) {
			t.Fatalf("deadline: status %q", got)
		}
	} else if !strings.Contains(err.Error(), "CANCEL") {
		t.Fatalf("deadline: %v", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatalf("deadline: the call took %v", time.Since(start))
	}
	// The caller's context ends first: the call fails with its error.
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = e.call(cctx, "UnaryCall", bytes.NewReader(clientGRPCFrame(&testpb.SimpleRequest{ResponseSize: 5000})))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("caller deadline: %v", err)
	}
}

func TestClientGRPCStreaming(t *testing.T) {
	clientNoLeak(t)
	e := clientNewGRPCEnv(t)
	ctx := context.Background()
	// Server streaming, messages beyond the stream window.
	sizes := []int32{1, 1000, 6 << 20, 3}
	req := &testpb.StreamingOutputCallRequest{}
	for _, s := range sizes {
		req.ResponseParameters = append(req.ResponseParameters, &testpb.ResponseParameters{Size: s})
	}
	resp, err := e.call(ctx, "StreamingOutputCall", bytes.NewReader(clientGRPCFrame(req)))
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range sizes {
		var m testpb.StreamingOutputCallResponse
		if err := clientGRPCRead(resp.Body, &m); err != nil || len(m.GetPayload().GetBody()) != int(s) {
			t.Fatalf("message %d: %d bytes, %v", i, len(m.GetPayload().GetBody()), err)
		}
	}
	clientReadAll(t, resp)
	if clientGRPCStatus(resp) != "0" {
		t.Fatalf("server streaming: status %q", clientGRPCStatus(resp))
	}
	// Client streaming through a pipe (the writer goroutine).
	pr, pw := io.Pipe()
	go func() {
		for _, n := range []int{5, 70 << 10, 2 << 20} {
			_, _ = pw.Write(clientGRPCFrame(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, n)}}))
		}
		_ = pw.Close()
	}()
	resp, err = e.call(ctx, "StreamingInputCall", pr)
	if err != nil {
		t.Fatal(err)
	}
	var agg testpb.StreamingInputCallResponse
	if err := clientGRPCRead(resp.Body, &agg); err != nil {
		t.Fatal(err)
	}
	clientReadAll(t, resp)
	if agg.GetAggregatedPayloadSize() != 5+70<<10+2<<20 || clientGRPCStatus(resp) != "0" {
		t.Fatalf("client streaming: %d, status %q", agg.GetAggregatedPayloadSize(), clientGRPCStatus(resp))
	}
	// Bidi: each answer arrives before the next message leaves.
	pr, pw = io.Pipe()
	// grpc-go answers headers with the first message: send it meanwhile.
	go func() {
		_, _ = pw.Write(clientGRPCFrame(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("aaa")}}))
	}()
	resp, err = e.call(ctx, "FullDuplexCall", pr)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range []int{3, 40 << 10, 1} {
		body := bytes.Repeat([]byte{byte('a' + i)}, n)
		if i > 0 {
			if _, err := pw.Write(clientGRPCFrame(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: body}})); err != nil {
				t.Fatal(err)
			}
		}
		var m testpb.StreamingOutputCallResponse
		if err := clientGRPCRead(resp.Body, &m); err != nil || !bytes.Equal(m.GetPayload().GetBody(), body) {
			t.Fatalf("bidi %d: %v", i, err)
		}
	}
	_ = pw.Close()
	clientReadAll(t, resp)
	if clientGRPCStatus(resp) != "0" {
		t.Fatalf("bidi: status %q", clientGRPCStatus(resp))
	}
	<-e.app.ended
}

func TestClientGRPCCancelMidStream(t *testing.T) {
	clientNoLeak(t)
	e := clientNewGRPCEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write(clientGRPCFrame(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("x")}}))
	}()
	resp, err := e.call(ctx, "FullDuplexCall", pr)
	if err != nil {
		t.Fatal(err)
	}
	var m testpb.StreamingOutputCallResponse
	if err := clientGRPCRead(resp.Body, &m); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := resp.Body.Read(make([]byte, 10)); !errors.Is(err, context.Canceled) {
		t.Fatalf("read after cancel: %v", err)
	}
	_ = resp.Body.Close()
	_ = pw.Close()
	select {
	case err := <-e.app.ended:
		if status.Code(err) != codes.Canceled {
			t.Fatalf("the server's stream ended with %v, want Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not see the cancel")
	}
}

func TestClientGRPCGracefulStop(t *testing.T) {
	// GracefulStop sends GOAWAY: the bidi call in flight completes.
	clientNoLeak(t)
	e := clientNewGRPCEnv(t)
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write(clientGRPCFrame(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("1")}}))
	}()
	resp, err := e.call(context.Background(), "FullDuplexCall", pr)
	if err != nil {
		t.Fatal(err)
	}
	var m testpb.StreamingOutputCallResponse
	if err := clientGRPCRead(resp.Body, &m); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() { e.srv.GracefulStop(); close(stopped) }()
	time.Sleep(100 * time.Millisecond) // the GOAWAY arrives
	_, _ = pw.Write(clientGRPCFrame(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("2")}}))
	if err := clientGRPCRead(resp.Body, &m); err != nil || string(m.GetPayload().GetBody()) != "2" {
		t.Fatalf("after GOAWAY: %v", err)
	}
	_ = pw.Close()
	clientReadAll(t, resp)
	if clientGRPCStatus(resp) != "0" {
		t.Fatalf("status %q", clientGRPCStatus(resp))
	}
	<-stopped
	// A new call needs a new connection: the server is gone, the dial fails.
	if _, err := e.call(context.Background(), "UnaryCall", bytes.NewReader(clientGRPCFrame(&testpb.SimpleRequest{}))); err == nil {
		t.Fatal("a call after the server stopped succeeded")
	}
}

func TestClientGRPCServerKilled(t *testing.T) {
	clientNoLeak(t)
	e := clientNewGRPCEnv(t)
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() {
		_, _ = pw.Write(clientGRPCFrame(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("1")}}))
	}()
	resp, err := e.call(context.Background(), "FullDuplexCall", pr)
	if err != nil {
		t.Fatal(err)
	}
	var m testpb.StreamingOutputCallResponse
	if err := clientGRPCRead(resp.Body, &m); err != nil {
		t.Fatal(err)
	}
	e.srv.Stop()
	done := make(chan error, 1)
	go func() { _, err := io.ReadAll(resp.Body); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("read after the server was killed: no error")
		}
		if clientGRPCStatus(resp) == "0" {
			t.Fatal("an OK status from a killed server")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read hangs after the server was killed")
	}
	_ = resp.Body.Close()
}
