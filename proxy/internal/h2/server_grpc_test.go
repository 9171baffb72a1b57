package h2

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/meshd/meshd/proxy/resiliency"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// srvGRPCApp is grpc-go's test service: echoes, streams, sleeps on demand.
type srvGRPCApp struct {
	testpb.UnimplementedTestServiceServer
	cancelled chan struct{}
}

func (a *srvGRPCApp) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-head", "h"))
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-trail", "t"))
	if st := req.GetResponseStatus(); st != nil {
		return nil, status.Error(codes.Code(st.GetCode()), st.GetMessage())
	}
	if ms := req.GetResponseSize(); ms > 0 { // sleep
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &testpb.SimpleResponse{Payload: req.GetPayload()}, nil
}

func (a *srvGRPCApp) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, ss grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	for _, p := range req.GetResponseParameters() {
		if err := ss.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: bytes.Repeat([]byte{'s'}, int(p.GetSize()))}}); err != nil {
			return err
		}
	}
	return nil
}

func (a *srvGRPCApp) StreamingInputCall(ss grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	total := 0
	for {
		m, err := ss.Recv()
		if errors.Is(err, io.EOF) {
			return ss.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: int32(total)})
		}
		if err != nil {
			return err
		}
		total += len(m.GetPayload().GetBody())
	}
}

func (a *srvGRPCApp) FullDuplexCall(ss grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	for {
		m, err := ss.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if a.cancelled != nil && status.Code(err) == codes.Canceled {
				close(a.cancelled)
			}
			return err
		}
		if err := ss.Send(&testpb.StreamingOutputCallResponse{Payload: m.GetPayload()}); err != nil {
			return err
		}
	}
}

// srvProxy forwards every request to backend over HTTP/2 (x/net's
// Transport, h2c), streaming both ways, trailers included: the sidecar's
// role, with a client nobody here wrote.
func srvProxy(tr *http2.Transport, backend string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		// The call's deadline, as the sidecar keeps it: the backend resets
		// the stream when its own copy of it passes (RST_STREAM CANCEL),
		// which may reach this proxy before the client's reset does.
		var deadline time.Time
		if v := r.Header["Grpc-Timeout"]; len(v) == 1 {
			if d, ok := resiliency.ParseGRPCTimeout(v[0]); ok {
				deadline = time.Now().Add(d)
				var cancel context.CancelFunc
				ctx, cancel = context.WithDeadline(ctx, deadline)
				defer cancel()
			}
		}
		out, _ := http.NewRequestWithContext(ctx, r.Method, "http://"+backend+r.URL.RequestURI(), r.Body)
		out.Header = r.Header.Clone()
		out.ContentLength = r.ContentLength
		resp, err := tr.RoundTrip(out)
		if err != nil {
			if r.Context().Err() != nil {
				panic(http.ErrAbortHandler) // the client reset the call
			}
			if !deadline.IsZero() && !time.Now().Before(deadline) {
				// As the sidecar answers: DEADLINE_EXCEEDED, trailers-only.
				w.Header()["Content-Type"] = []string{"application/grpc"}
				w.Header()["Grpc-Status"] = []string{"4"}
				w.Header()["Grpc-Message"] = []string{"deadline exceeded"}
				w.WriteHeader(http.StatusOK)
				return
			}
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, vv := range resp.Header {
			w.Header()[k] = vv
		}
		// No flush before the first body bytes: a trailers-only answer
		// (grpc-status in the headers) stays one HEADERS frame.
		w.WriteHeader(resp.StatusCode)
		buf := make([]byte, 32<<10)
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					panic(http.ErrAbortHandler) // reset the stream: the call failed
				}
				break
			}
		}
		for k, vv := range resp.Trailer {
			w.Header()[http.TrailerPrefix+k] = vv
		}
	})
}

// srvGRPCSetup: grpc-go client -> Server (h2c or TLS) -> srvProxy ->
// grpc-go server.
func srvGRPCSetup(t *testing.T, withTLS bool, app *srvGRPCApp) testpb.TestServiceClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(8<<20), grpc.MaxSendMsgSize(8<<20))
	testpb.RegisterTestServiceServer(gs, app)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	ts := srvStart(t, srvProxy(tr, ln.Addr().String()), withTLS, nil)
	creds := insecure.NewCredentials()
	var opts []grpc.DialOption
	if withTLS {
		opts = append(opts, grpc.WithTransportCredentials(srvCredentials(ts.tls)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(creds))
	}
	opts = append(opts, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20), grpc.MaxCallSendMsgSize(8<<20)))
	cc, err := grpc.NewClient(ts.addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return testpb.NewTestServiceClient(cc)
}

// TestServerGRPC: grpc-go's client through the server (and a proxying
// handler) to grpc-go's server: unary, the three streaming kinds, messages
// beyond every window, errors, deadlines, cancellation.
func TestServerGRPC(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		t.Run("tls="+strconv.FormatBool(withTLS), func(t *testing.T) {
			srvCheckLeaks(t)
			app := &srvGRPCApp{cancelled: make(chan struct{})}
			cl := srvGRPCSetup(t, withTLS, app)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			t.Run("unary", func(t *testing.T) {
				var hdr, trl metadata.MD
				resp, err := cl.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hello")}}, grpc.Header(&hdr), grpc.Trailer(&trl))
				if err != nil {
					t.Fatal(err)
				}
				if string(resp.GetPayload().GetBody()) != "hello" || srvFirst(hdr["x-head"]) != "h" || srvFirst(trl["x-trail"]) != "t" {
					t.Fatalf("payload %q header %v trailer %v", resp.GetPayload().GetBody(), hdr, trl)
				}
			})
			t.Run("unary large", func(t *testing.T) {
				body := bytes.Repeat([]byte("0123456789"), 600_000) // 6 MB: beyond every window
				resp, err := cl.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: body}})
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(resp.GetPayload().GetBody(), body) {
					t.Fatal("payload changed on the way")
				}
			})
			t.Run("error status", func(t *testing.T) {
				_, err := cl.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "no such"}})
				if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "no such" {
					t.Fatalf("got %v", err)
				}
			})
			t.Run("deadline", func(t *testing.T) {
				dctx, dcancel := context.WithTimeout(ctx, 100*time.Millisecond)
				defer dcancel()
				start := time.Now()
				_, err := cl.UnaryCall(dctx, &testpb.SimpleRequest{ResponseSize: 5000})
				if status.Code(err) != codes.DeadlineExceeded || time.Since(start) > 3*time.Second {
					t.Fatalf("got %v after %s", err, time.Since(start))
				}
			})
			t.Run("server streaming", func(t *testing.T) {
				var params []*testpb.ResponseParameters
				for i := range 40 {
					params = append(params, &testpb.ResponseParameters{Size: int32(1000 * (i + 1) * 5)})
				}
				ss, err := cl.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params})
				if err != nil {
					t.Fatal(err)
				}
				for i := range params {
					m, err := ss.Recv()
					if err != nil {
						t.Fatal(i, err)
					}
					if len(m.GetPayload().GetBody()) != int(params[i].GetSize()) {
						t.Fatalf("message %d: %d bytes", i, len(m.GetPayload().GetBody()))
					}
				}
				if _, err := ss.Recv(); !errors.Is(err, io.EOF) {
					t.Fatal(err)
				}
			})
			t.Run("client streaming", func(t *testing.T) {
				cs, err := cl.StreamingInputCall(ctx)
				if err != nil {
					t.Fatal(err)
				}
				total := 0
				for i := range 40 {
					n := 7000 * (i + 1)
					total += n
					if err := cs.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, n)}}); err != nil {
						t.Fatal(err)
					}
				}
				resp, err := cs.CloseAndRecv()
				if err != nil || int(resp.GetAggregatedPayloadSize()) != total {
					t.Fatalf("%v %v, want %d", resp, err, total)
				}
			})
			t.Run("bidi", func(t *testing.T) {
				bs, err := cl.FullDuplexCall(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for i := range 50 {
					body := bytes.Repeat([]byte{byte(i)}, 100*i)
					if err := bs.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: body}}); err != nil {
						t.Fatal(err)
					}
					m, err := bs.Recv()
					if err != nil || !bytes.Equal(m.GetPayload().GetBody(), body) {
						t.Fatalf("round %d: %v", i, err)
					}
				}
				_ = bs.CloseSend()
				if _, err := bs.Recv(); !errors.Is(err, io.EOF) {
					t.Fatal(err)
				}
			})
			t.Run("cancel", func(t *testing.T) {
				cctx, ccancel := context.WithCancel(ctx)
				bs, err := cl.FullDuplexCall(cctx)
				if err != nil {
					t.Fatal(err)
				}
				_ = bs.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("x")}})
				if _, err := bs.Recv(); err != nil {
					t.Fatal(err)
				}
				ccancel()
				select {
				case <-app.cancelled:
				case <-time.After(5 * time.Second):
					t.Fatal("the cancel did not reach the app")
				}
			})
			t.Run("concurrent", func(t *testing.T) {
				errs := make(chan error, 100)
				for i := range 100 {
					go func() {
						body := bytes.Repeat([]byte{'c'}, i*500)
						resp, err := cl.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: body}})
						if err == nil && !bytes.Equal(resp.GetPayload().GetBody(), body) {
							err = errors.New("payload changed")
						}
						errs <- err
					}()
				}
				for range 100 {
					if err := <-errs; err != nil {
						t.Error(err)
					}
				}
			})
		})
	}
}

func srvFirst(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func srvCredentials(cfg *tls.Config) credentials.TransportCredentials {
	return credentials.NewTLS(cfg)
}
