package e2e_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func grpcConn(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// checkMD checks the metadata grpcecho sends back (headers or trailers).
func checkMD(t testing.TB, what string, md metadata.MD) {
	t.Helper()
	for _, c := range []struct{ key, want string }{
		{"x-trace-me", "abc-123"},
		{"x-echo-server", "g1"},
		{"dapr-caller-app-id", appFrontend},
		{"dapr-caller-namespace", "default"},
		{"dapr-callee-app-id", appGRPC},
	} {
		if got := md.Get(c.key); len(got) != 1 || got[0] != c.want {
			t.Errorf("%s: %s = %q, want [%q]", what, c.key, got, c.want)
		}
	}
	if got := md.Get("dapr-app-id"); len(got) != 0 {
		t.Errorf("%s: the app saw dapr-app-id %q; the sidecar should consume it", what, got)
	}
}

// testGRPC is bullet 3: gRPC through the sidecars, every call kind.
func testGRPC(t *testing.T, m *mesh) {
	client := testpb.NewTestServiceClient(grpcConn(t, m.frontend.GRPCAddr()))
	outgoing := func(ctx context.Context, kv ...string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, append([]string{"dapr-app-id", appGRPC, "x-trace-me", "abc-123",
			"dapr-caller-app-id", "admin", "dapr-callee-app-id", "billing"}, kv...)...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("Unary", func(t *testing.T) {
		var hdr, trl metadata.MD
		resp, err := client.UnaryCall(outgoing(ctx), &testpb.SimpleRequest{ResponseSize: 4096}, grpc.Header(&hdr), grpc.Trailer(&trl))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetPayload().GetBody()) != 4096 || resp.GetServerId() != "g1" {
			t.Errorf("payload %d bytes from %q, want 4096 from g1", len(resp.GetPayload().GetBody()), resp.GetServerId())
		}
		checkMD(t, "header", hdr)
		checkMD(t, "trailer", trl)
	})

	// An interceptor and per-RPC credentials that both set dapr-app-id
	// send it twice: the same value is one target (as daprd), different
	// ones are refused.
	t.Run("RepeatedAppID", func(t *testing.T) {
		same := metadata.AppendToOutgoingContext(ctx, "dapr-app-id", appGRPC, "dapr-app-id", appGRPC)
		if _, err := client.EmptyCall(same, &testpb.Empty{}); err != nil {
			t.Errorf("dapr-app-id twice, same value: %v", err)
		}
		diff := metadata.AppendToOutgoingContext(ctx, "dapr-app-id", appGRPC, "dapr-app-id", appOrders)
		if _, err := client.EmptyCall(diff, &testpb.Empty{}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("dapr-app-id twice, different values: %v, want InvalidArgument", err)
		}
	})

	t.Run("UnaryNamespaced", func(t *testing.T) {
		c := metadata.AppendToOutgoingContext(ctx, "dapr-app-id", appGRPC+".default")
		if _, err := client.EmptyCall(c, &testpb.Empty{}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ClientStreaming", func(t *testing.T) {
		s, err := client.StreamingInputCall(outgoing(ctx))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 5; i++ {
			if err := s.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, 1000)}}); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := s.CloseAndRecv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetAggregatedPayloadSize() != 5000 {
			t.Errorf("aggregated %d, want 5000", resp.GetAggregatedPayloadSize())
		}
		hdr, err := s.Header()
		if err != nil {
			t.Fatal(err)
		}
		checkMD(t, "header", hdr)
		checkMD(t, "trailer", s.Trailer())
	})

	t.Run("ServerStreaming", func(t *testing.T) {
		const n, interval = 5, 200 * time.Millisecond
		req := &testpb.StreamingOutputCallRequest{}
		for i := 0; i < n; i++ {
			req.ResponseParameters = append(req.ResponseParameters, &testpb.ResponseParameters{Size: int32(100 + i), IntervalUs: int32(interval / time.Microsecond)})
		}
		start := time.Now()
		s, err := client.StreamingOutputCall(outgoing(ctx), req)
		if err != nil {
			t.Fatal(err)
		}
		var arrived []time.Duration
		for {
			resp, err := s.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, want := len(resp.GetPayload().GetBody()), 100+len(arrived); got != want {
				t.Errorf("message %d: %d bytes, want %d", len(arrived), got, want)
			}
			arrived = append(arrived, time.Since(start))
		}
		if len(arrived) != n {
			t.Fatalf("%d messages, want %d", len(arrived), n)
		}
		// The app sends message i at about (i+1)*interval: the first must
		// arrive long before the last is sent.
		if arrived[0] >= time.Duration(n-1)*interval {
			t.Errorf("first message arrived after %s, the last was due at %s: not streamed", arrived[0], time.Duration(n)*interval)
		}
		hdr, _ := s.Header()
		checkMD(t, "header", hdr)
		checkMD(t, "trailer", s.Trailer())
	})

	t.Run("BidiStreaming", func(t *testing.T) {
		s, err := client.FullDuplexCall(outgoing(ctx))
		if err != nil {
			t.Fatal(err)
		}
		// Ping-pong: each answer must come back before the next request is
		// sent, which a proxy that buffers either direction cannot do.
		for i := 0; i < 5; i++ {
			if err := s.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: int32(10 * (i + 1))}}}); err != nil {
				t.Fatal(err)
			}
			resp, err := s.Recv()
			if err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
			if len(resp.GetPayload().GetBody()) != 10*(i+1) {
				t.Errorf("round %d: %d bytes, want %d", i, len(resp.GetPayload().GetBody()), 10*(i+1))
			}
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("after CloseSend: %v, want EOF", err)
		}
		hdr, _ := s.Header()
		checkMD(t, "header", hdr)
		checkMD(t, "trailer", s.Trailer())
	})

	t.Run("RequestedStatus", func(t *testing.T) {
		for _, c := range []struct {
			code codes.Code
			msg  string
		}{
			{codes.FailedPrecondition, "order 42 is closed"},
			{codes.NotFound, "no such order: ümlaut % percent"},
			{codes.Unavailable, "app says unavailable"}, // must not be retried or rewritten
			{codes.PermissionDenied, "app says no"},
		} {
			var trl metadata.MD
			_, err := client.UnaryCall(outgoing(ctx), &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(c.code), Message: c.msg}}, grpc.Trailer(&trl))
			st := status.Convert(err)
			if st.Code() != c.code || st.Message() != c.msg {
				t.Errorf("got %s %q, want %s %q", st.Code(), st.Message(), c.code, c.msg)
			}
			checkMD(t, "trailer of "+c.code.String(), trl)
		}
	})

	t.Run("DeadlineShorterThanDelay", func(t *testing.T) {
		dctx, dcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer dcancel()
		start := time.Now()
		_, err := client.UnaryCall(outgoing(dctx, "x-echo-delay", "3s"), &testpb.SimpleRequest{})
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("got %v, want DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("DeadlineExceeded after %s; the deadline was 300ms", d)
		}
		// The sidecars and the app are still fine afterwards.
		if _, err := client.EmptyCall(outgoing(ctx), &testpb.Empty{}); err != nil {
			t.Fatal(err)
		}
	})
}

// testDaprSDK is bullet 4: the Dapr Go SDK against meshd's Dapr gRPC API.
func testDaprSDK(t *testing.T, m *mesh) {
	c, err := dapr.NewClientWithAddress(m.frontend.GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, target := range []string{appOrders, appOrders + ".default"} {
		out, err := c.InvokeMethod(ctx, target, "sdk/orders/7?expand=items&x=1", "get")
		if err != nil {
			t.Fatalf("InvokeMethod %s: %v", target, err)
		}
		var e echoReply
		if err := json.Unmarshal(out, &e); err != nil {
			t.Fatalf("InvokeMethod %s: %q: %v", target, out, err)
		}
		if e.Method != http.MethodGet || e.Path != "/sdk/orders/7" || e.RawQuery != "expand=items&x=1" || e.CallerAppID != appFrontend || e.CalleeAppID != appOrders {
			t.Errorf("InvokeMethod %s: app saw %s %s ?%s from %q to %q", target, e.Method, e.Path, e.RawQuery, e.CallerAppID, e.CalleeAppID)
		}
	}

	for _, c2 := range []struct{ verb, method, ct, data string }{
		{"post", http.MethodPost, "application/json", `{"order":42,"items":["a","b"]}`},
		{"put", http.MethodPut, "text/plain; charset=utf-8", "plain text body"},
		{"patch", http.MethodPatch, "application/octet-stream", "\x00\x01\x02binary"},
		{"delete", http.MethodDelete, "application/json", `{}`},
	} {
		out, err := c.InvokeMethodWithContent(ctx, appOrders, "sdk/content", c2.verb, &dapr.DataContent{ContentType: c2.ct, Data: []byte(c2.data)})
		if err != nil {
			t.Fatalf("InvokeMethodWithContent %s: %v", c2.verb, err)
		}
		var e echoReply
		if err := json.Unmarshal(out, &e); err != nil {
			t.Fatalf("InvokeMethodWithContent %s: %q: %v", c2.verb, out, err)
		}
		sum := sha256.Sum256([]byte(c2.data))
		if e.Method != c2.method || e.Path != "/sdk/content" || strings.Join(e.Headers["Content-Type"], "|") != c2.ct ||
			e.BodyLength != int64(len(c2.data)) || e.BodySHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("InvokeMethodWithContent %s: app saw %s %s content-type %q, %d bytes sha %s; want %s /sdk/content %q %d bytes sha %x",
				c2.verb, e.Method, e.Path, e.Headers["Content-Type"], e.BodyLength, e.BodySHA256, c2.method, c2.ct, len(c2.data), sum)
		}
	}

	// An unknown app: the error names it.
	if _, err := c.InvokeMethod(ctx, "nosuchapp", "x", "get"); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "nosuchapp") {
		t.Errorf("InvokeMethod to an unknown app: %v, want Unavailable naming the app", err)
	}

	// Errors: an app's error status and a sidecar's own error.
	_, err = c.InvokeMethod(ctx, appOrders, "status/404", "get")
	if status.Code(err) != codes.NotFound {
		t.Errorf("app 404 through the SDK: %v, want NotFound", err)
	}
	_, err = c.InvokeMethod(ctx, "nosuchapp", "x", "get")
	if status.Code(err) != codes.Unavailable {
		t.Errorf("unknown app through the SDK: %v, want Unavailable", err)
	}
	// A sidecar error is told apart from an app's: ErrorInfo domain meshd.
	var info *errdetails.ErrorInfo
	for _, d := range status.Convert(err).Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			info = ei
		}
	}
	if info == nil || info.GetDomain() != "meshd" || info.GetReason() != "ERR_NO_HEALTHY_ENDPOINT" {
		t.Errorf("unknown app through the SDK: ErrorInfo %v, want domain meshd, reason ERR_NO_HEALTHY_ENDPOINT", info)
	}
}
