package hardening_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/meshd/meshd/tests/harness"
)

// TestNotReadyUntilIdentity is issue #11 item 6: a sidecar whose sentry is
// down answers at once, "not ready", on every port, and takes up its work
// on the same sockets when sentry comes up.
func TestNotReadyUntilIdentity(t *testing.T) {
	bins := harness.Build(t)
	// A sentry that made its CA, bundle and a token, then went away.
	s := harness.StartSentry(t, bins, "")
	token := s.TokenFile(t, "solo", "default")
	if err := s.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	spy := startSpy(t)
	ports := harness.NewSidecarPorts(t)
	resolver := filepath.Join(t.TempDir(), "resolver.yaml")
	harness.WriteStatic(t, resolver, harness.StaticApp{AppID: "solo", Addresses: []string{ports.InternalAddr()}})
	start := func(t *testing.T, p harness.SidecarPorts) *harness.Process {
		return harness.Start(t, "meshd-solo", bins.Meshd, "--app-id", "solo",
			"--http-port", strconv.Itoa(p.HTTP), "--grpc-port", strconv.Itoa(p.GRPC),
			"--internal-port", strconv.Itoa(p.Internal), "--metrics-port", strconv.Itoa(p.Metrics),
			"--listen-address", "127.0.0.1", "--app-port", strconv.Itoa(spy.port),
			"--sentry-address", s.Addr, "--trust-anchors-file", s.BundleFile(), "--token-file", token,
			"--resolver", "static", "--resolver-config", resolver)
	}
	httpURL := "http://127.0.0.1:" + strconv.Itoa(ports.HTTP)
	client := &http.Client{Timeout: 2 * time.Second}

	proc := start(t, ports)
	harness.WaitTCP(t, "127.0.0.1:"+strconv.Itoa(ports.HTTP), 10*time.Second)

	t.Run("HealthzNotReady", func(t *testing.T) {
		for _, path := range []string{"/v1.0/healthz", "/v1.0/healthz/outbound"} {
			begin := time.Now()
			resp, err := client.Get(httpURL + path)
			if err != nil {
				t.Fatalf("%s: %v after %s", path, err, time.Since(begin).Round(time.Millisecond))
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			checkError(t, path, resp, body, http.StatusServiceUnavailable, "ERR_NOT_READY")
			if d := time.Since(begin); d > time.Second {
				t.Errorf("%s answered after %s", path, d)
			}
		}
	})
	t.Run("InvokeNotReady", func(t *testing.T) {
		before := spy.hits.Load()
		resp, err := client.Post(httpURL+"/v1.0/invoke/solo/method/x", "text/plain", strings.NewReader("hello"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		checkError(t, "invoke", resp, body, http.StatusServiceUnavailable, "ERR_NOT_READY")
		if !strings.Contains(string(body), "waiting for its identity from sentry at "+s.Addr) {
			t.Errorf("message does not say what the sidecar waits for: %s", body)
		}
		if spy.hits.Load() != before {
			t.Errorf("the app was called")
		}
	})
	cc, err := grpc.NewClient("127.0.0.1:"+strconv.Itoa(ports.GRPC), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	grpcClient := testpb.NewTestServiceClient(cc)
	t.Run("GRPCNotReady", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := grpcClient.EmptyCall(ctx, &testpb.Empty{})
		if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "ERR_NOT_READY") {
			t.Fatalf("gRPC call: %s %q, want Unavailable ERR_NOT_READY", st.Code(), st.Message())
		}
	})
	t.Run("InternalRefuses", func(t *testing.T) {
		begin := time.Now()
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ports.InternalAddr(),
			&tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}) //nolint:gosec // only the refusal is checked
		if err == nil {
			c.Close()
			t.Fatal("TLS handshake with a sidecar that has no identity succeeded")
		}
		if d := time.Since(begin); d > time.Second {
			t.Errorf("refused after %s, want at once", d)
		}
	})

	// Sentry comes up (same address, same CA): the sidecar becomes ready
	// without a restart, on the same sockets.
	harness.Start(t, "sentry-again", bins.Sentry, "--data-dir", s.DataDir, "--listen", s.Addr, "--health-listen", s.HealthAddr)
	t.Run("ReadyWhenSentryComes", func(t *testing.T) {
		harness.WaitHTTP(t, httpURL+"/v1.0/healthz", http.StatusNoContent, 40*time.Second)
		before := spy.hits.Load()
		resp, err := client.Post(httpURL+"/v1.0/invoke/solo/method/x", "text/plain", strings.NewReader("hello"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || spy.hits.Load() != before+1 {
			t.Fatalf("invoke once ready: %s %s (app hits %d)", resp.Status, body, spy.hits.Load()-before)
		}
		// The gRPC client of the not-ready time now reaches the proxy
		// (no dapr-app-id: the proxy's Unimplemented, not Unavailable).
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = grpcClient.EmptyCall(ctx, &testpb.Empty{}, grpc.WaitForReady(true))
		if st := status.Convert(err); st.Code() != codes.Unimplemented {
			t.Fatalf("gRPC call once ready: %s %q, want the proxy's Unimplemented", st.Code(), st.Message())
		}
		if proc.Exited() {
			t.Fatal("the sidecar restarted")
		}
	})
}

// TestSIGTERMWhileWaitingForIdentity: a sidecar whose sentry never answers
// stops at once on SIGTERM, with exit code 0.
func TestSIGTERMWhileWaitingForIdentity(t *testing.T) {
	bins := harness.Build(t)
	s := harness.StartSentry(t, bins, "")
	token := s.TokenFile(t, "solo", "default")
	// A black hole where sentry was: accepts, never answers.
	if err := s.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	p := harness.NewSidecarPorts(t)
	proc := harness.Start(t, "meshd-solo", bins.Meshd, "--app-id", "solo",
		"--http-port", strconv.Itoa(p.HTTP), "--grpc-port", strconv.Itoa(p.GRPC),
		"--internal-port", strconv.Itoa(p.Internal), "--metrics-port", strconv.Itoa(p.Metrics),
		"--listen-address", "127.0.0.1", "--sentry-address", s.Addr, "--trust-anchors-file", s.BundleFile(),
		"--token-file", token, "--resolver", "static", "--resolver-config", writeEmptyResolver(t))
	harness.WaitHTTP(t, "http://127.0.0.1:"+strconv.Itoa(p.HTTP)+"/v1.0/healthz", http.StatusServiceUnavailable, 10*time.Second)
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := proc.Wait(3 * time.Second); err != nil || proc.ExitCode() != 0 {
		t.Fatalf("after SIGTERM: %v, exit code %d", err, proc.ExitCode())
	}
	t.Logf("exited 0 %s after SIGTERM", time.Since(begin).Round(time.Millisecond))
}

func writeEmptyResolver(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "empty.yaml")
	harness.WriteStatic(t, path)
	return path
}
