package proxy

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshd/meshd/proxy/resiliency"
)

// flakyGRPC fails the first `fail` UnaryCalls with the request's status
// code (Unavailable without one) and records the deadline it saw.
type flakyGRPC struct {
	testpb.UnimplementedTestServiceServer
	calls    atomic.Int64
	fail     int64
	deadline atomic.Int64 // ms left, as seen by the app
}

func (f *flakyGRPC) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	n := f.calls.Add(1)
	if dl, ok := ctx.Deadline(); ok {
		f.deadline.Store(int64(time.Until(dl) / time.Millisecond))
	}
	if n <= f.fail {
		code := codes.Unavailable
		if req.GetResponseStatus() != nil {
			code = codes.Code(req.GetResponseStatus().GetCode())
		}
		return nil, status.Error(code, "flaky")
	}
	return &testpb.SimpleResponse{Payload: req.GetPayload()}, nil
}

func TestGRPCRetryByStatus(t *testing.T) {
	spec, err := resiliency.Parse("grpc.yaml", []byte(`apiVersion: dapr.io/v1alpha1
kind: Resiliency
spec:
  policies:
    retries:
      r: {duration: 10ms, maxRetries: 3, matching: {gRPCStatusCodes: "14"}}
  targets:
    apps:
      grpcapp: {retry: r}
`))
	if err != nil {
		t.Fatal(err)
	}
	app := &flakyGRPC{}
	e, c, callee := newGRPCEnvWith(t, app)
	e.caller.p.SetResiliency(resiliency.New(spec))
	ctx := func(d time.Duration) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		t.Cleanup(cancel)
		return metadata.AppendToOutgoingContext(ctx, "dapr-app-id", "grpcapp")
	}
	payload := &testpb.Payload{Body: []byte("ping")}

	// Unavailable twice, then OK: retried (code 14 is listed), body resent.
	app.calls.Store(0)
	app.fail = 2
	resp, err := c.UnaryCall(ctx(5*time.Second), &testpb.SimpleRequest{Payload: payload})
	if err != nil || string(resp.GetPayload().GetBody()) != "ping" {
		t.Fatalf("UnaryCall: %v %v", resp, err)
	}
	if n := app.calls.Load(); n != 3 {
		t.Fatalf("app saw %d calls, want 3", n)
	}
	// The app's deadline is the caller's, propagated (about 5s).
	if d := app.deadline.Load(); d < 3000 || d > 5000 {
		t.Errorf("app's deadline %dms, want about 5000", d)
	}

	// InvalidArgument is not listed: not retried.
	app.calls.Store(0)
	app.fail = 1
	_, err = c.UnaryCall(ctx(5*time.Second), &testpb.SimpleRequest{Payload: payload, ResponseStatus: &testpb.EchoStatus{Code: int32(codes.InvalidArgument)}})
	if status.Code(err) != codes.InvalidArgument || app.calls.Load() != 1 {
		t.Fatalf("InvalidArgument: %v after %d calls", err, app.calls.Load())
	}

	// A dial error first: the streamed (recorded) body was never read and
	// goes to the other endpoint; each call reaches the app once.
	dead := listen(t)
	deadAddr := dead.Addr().String()
	dead.Close()
	e.res.set("grpcapp", deadAddr, callee.internal)
	app.fail = 0
	for i := 0; i < 4; i++ {
		app.calls.Store(0)
		resp, err := c.UnaryCall(ctx(5*time.Second), &testpb.SimpleRequest{Payload: payload})
		if err != nil || string(resp.GetPayload().GetBody()) != "ping" || app.calls.Load() != 1 {
			t.Fatalf("call %d with a dead endpoint: %v %v, %d app calls", i, resp, err, app.calls.Load())
		}
	}
	e.res.set("grpcapp", callee.internal)

	// A short gRPC deadline: the app sees it (smaller than 1s).
	app.calls.Store(0)
	app.fail = 0
	if _, err := c.UnaryCall(ctx(800*time.Millisecond), &testpb.SimpleRequest{Payload: payload}); err != nil {
		t.Fatal(err)
	}
	if d := app.deadline.Load(); d <= 0 || d > 800 {
		t.Errorf("app's deadline %dms, want at most 800", d)
	}
}

func TestPerAttemptTimeoutRetried(t *testing.T) {
	spec, err := resiliency.Parse("t.yaml", []byte(`apiVersion: dapr.io/v1alpha1
kind: Resiliency
spec:
  policies:
    timeouts: {short: 300ms}
    retries:
      r: {duration: 10ms, maxRetries: 1}
  targets:
    apps:
      orders: {retry: r, timeout: short}
`))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, nil)
	e.caller.p.SetResiliency(resiliency.New(spec))
	start := time.Now()
	resp, err := http.Get(e.caller.httpURL + "/v1.0/invoke/orders/method/slow")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// Two attempts of 300ms each, then 504.
	if el := time.Since(start); resp.StatusCode != http.StatusGatewayTimeout || el < 550*time.Millisecond || el > 3*time.Second {
		t.Fatalf("status %d after %v, want 504 after about 600ms", resp.StatusCode, el)
	}
}

// TestNoPolicyHookAllocs: what forward adds for a target without policy
// (with and without a Resiliency config loaded) allocates nothing.
func TestNoPolicyHookAllocs(t *testing.T) {
	spec, err := resiliency.Parse("a.yaml", []byte("apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nspec:\n  policies:\n    timeouts: {t: 1s}\n  targets:\n    apps:\n      orders: {timeout: t}\n"))
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{}
	r, _ := http.NewRequest("GET", "http://x/", nil)
	for _, c := range []*resiliency.Config{nil, resiliency.New(spec)} {
		p.SetResiliency(c)
		_ = p.res.Load().For("stock", "default")
		if n := testing.AllocsPerRun(1000, func() {
			if p.res.Load().For("stock", "default") != nil {
				t.Fatal("stock has a policy")
			}
			if p.callTimeout(r, false) != 0 {
				t.Fatal("a timeout without header or config")
			}
		}); n != 0 {
			t.Errorf("config %v: the no-policy hook allocates %v times", c != nil, n)
		}
	}
}
