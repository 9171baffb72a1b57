// Command xdsclient is a sample proxyless gRPC client: plain grpc-go with
// its own "xds" resolver and xDS credentials, no sidecar. It calls
// grpc.testing.TestService (what examples/apps/grpcecho serves) at an
// xds:/// target and reports which instance answered each call.
//
// Setup (docs/xds-proxyless.md): GRPC_XDS_BOOTSTRAP names the bootstrap
// (meshctl xds bootstrap), whose files meshctl svid keeps current, and
// GRPC_EXPERIMENTAL_XDS_MTLS_SPIFFE=true lets grpc-go verify the control
// plane's SVID.
//
// Built with -tags meshdcreds it imports xds/grpccreds, and so accepts only
// a control plane with the SPIFFE ID the bootstrap names.
//
// It reads commands from stdin, one a line, and answers each with one JSON
// line on stdout:
//
//	unary N    N UnaryCalls
//	stream N   N FullDuplexCalls, each one request and one answer
//	quit
//
// The answer counts calls per instance (the x-echo-server header grpcecho
// sends back), the caller identity the callee app was told
// (dapr-caller-app-id / dapr-caller-namespace), and errors by code.
//
// Usage: xdsclient --target xds:///echo.default [--timeout 5s]
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	xdscreds "google.golang.org/grpc/credentials/xds"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	_ "google.golang.org/grpc/xds" // the xds:/// resolver and the xDS balancers
)

// Result is the answer to one command.
type Result struct {
	Calls     int            `json:"calls"`
	Instances map[string]int `json:"instances"`         // x-echo-server -> calls
	Callers   map[string]int `json:"callers,omitempty"` // "app.ns" the callee app saw -> calls
	Errors    map[string]int `json:"errors,omitempty"`  // "Code: message" -> calls
}

func main() {
	target := flag.String("target", "", "xds:///{app}.{namespace}")
	timeout := flag.Duration("timeout", 5*time.Second, "deadline of each call")
	flag.Parse()
	if err := run(*target, *timeout, os.Stdin, os.Stdout); err != nil {
		slog.Error("xdsclient: " + err.Error())
		os.Exit(1)
	}
}

func run(target string, timeout time.Duration, in io.Reader, out io.Writer) error {
	if !strings.HasPrefix(target, "xds:///") {
		return fmt.Errorf("--target %q is not xds:///{app}.{namespace}", target)
	}
	// The Cluster's transport socket decides the security; a Cluster
	// without one must not silently get plaintext, so the fallback refuses.
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: refuse{}})
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := testpb.NewTestServiceClient(conn)
	enc := json.NewEncoder(out)
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if f[0] == "quit" {
			return nil
		}
		if len(f) != 2 || (f[0] != "unary" && f[0] != "stream") {
			return fmt.Errorf("bad command %q (want unary N, stream N or quit)", sc.Text())
		}
		n, err := strconv.Atoi(f[1])
		if err != nil || n < 1 {
			return fmt.Errorf("bad count in %q", sc.Text())
		}
		res := Result{Instances: map[string]int{}, Callers: map[string]int{}, Errors: map[string]int{}}
		for range n {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			var hdr metadata.MD
			if f[0] == "unary" {
				_, err = client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 16}, grpc.Header(&hdr))
			} else {
				hdr, err = duplex(ctx, client)
			}
			cancel()
			res.Calls++
			if err != nil {
				st := status.Convert(err)
				res.Errors[st.Code().String()+": "+st.Message()]++
				continue
			}
			res.Instances[first(hdr, "x-echo-server")]++
			res.Callers[first(hdr, "dapr-caller-app-id")+"."+first(hdr, "dapr-caller-namespace")]++
		}
		if err := enc.Encode(res); err != nil {
			return err
		}
	}
	return sc.Err()
}

// duplex makes one FullDuplexCall: one request, one answer, then close.
func duplex(ctx context.Context, client testpb.TestServiceClient) (metadata.MD, error) {
	s, err := client.FullDuplexCall(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 16}}}); err != nil {
		_, err = s.Recv() // the stream's status
		return nil, err
	}
	if _, err := s.Recv(); err != nil {
		return nil, err
	}
	if err := s.CloseSend(); err != nil {
		return nil, err
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("stream did not end cleanly: %w", err)
	}
	return s.Header()
}

func first(md metadata.MD, k string) string {
	if v := md.Get(k); len(v) > 0 {
		return v[0]
	}
	return "?"
}

// refuse is transport credentials that refuse every handshake.
type refuse struct{}

var errNoSecurity = errors.New("xdsclient: the control plane sent no mTLS settings for this cluster; refusing plaintext")

func (refuse) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errNoSecurity
}
func (refuse) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errNoSecurity
}
func (refuse) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}
func (refuse) Clone() credentials.TransportCredentials { return refuse{} }
func (refuse) OverrideServerName(string) error         { return nil }
