// Command signbench measures sentry's signing throughput and latency: it
// starts a real sentry (gRPC over TLS on loopback, join tokens) in a
// temporary data dir, or uses one at -addr, and has -c clients, each on its
// own connection, send SignCertificate calls for -d. It prints CSRs/second
// and p50/p99 latency (and a JSON line with -json).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry"
	"github.com/meshd/meshd/sentry/ca"
	"github.com/meshd/meshd/sentry/sentrypb"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

func main() {
	conc := flag.Int("c", 8, "concurrent clients (one connection each)")
	dur := flag.Duration("d", 5*time.Second, "measurement duration")
	asJSON := flag.Bool("json", false, "also print a JSON line")
	flag.Parse()
	if err := run(*conc, *dur, *asJSON); err != nil {
		fmt.Fprintln(os.Stderr, "signbench:", err)
		os.Exit(1)
	}
}

func run(conc int, dur time.Duration, asJSON bool) error {
	dir, err := os.MkdirTemp("", "signbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	dataDir := filepath.Join(dir, "sentry")
	td := spiffeid.RequireTrustDomainFromString(certs.DefaultTrustDomain)
	log := slog.New(slog.DiscardHandler)
	v, err := sentry.NewValidator(sentry.ValidatorJoin, dataDir, log)
	if err != nil {
		return err
	}
	srv, err := sentry.New(sentry.Config{CA: ca.Options{DataDir: dataDir, TrustDomain: td}, Validator: v, Logger: log})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = srv.Serve(ctx, lis) }()

	tok, _, err := sentry.CreateJoinToken(dataDir, "", "default", "bench", time.Hour, false, time.Now())
	if err != nil {
		return err
	}
	tlsCfg := tlsconfig.TLSClientConfig(srv.Authority(), tlsconfig.AuthorizeID(ca.SentryID(td)))
	type result struct{ lat []time.Duration }
	results := make([]result, conc)
	var wg sync.WaitGroup
	errc := make(chan error, conc)
	start := make(chan struct{})
	for i := range conc {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
		if err != nil {
			return err
		}
		defer conn.Close()
		api := sentrypb.NewCAClient(conn)
		key, err := certs.GenerateKey()
		if err != nil {
			return err
		}
		csr, err := certs.NewCSR(key)
		if err != nil {
			return err
		}
		req := &sentrypb.SignCertificateRequest{AppId: "bench", Namespace: "default", TrustDomain: td.String(), CsrPem: csr, Token: tok}
		if _, err := api.SignCertificate(ctx, req); err != nil { // warm up the connection
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			end := time.Now().Add(dur)
			for time.Now().Before(end) {
				t0 := time.Now()
				if _, err := api.SignCertificate(ctx, req); err != nil {
					errc <- err
					return
				}
				results[i].lat = append(results[i].lat, time.Since(t0))
			}
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	elapsed := time.Since(t0)
	select {
	case err := <-errc:
		return fmt.Errorf("a call failed: %w", err)
	default:
	}
	var all []time.Duration
	for _, r := range results {
		all = append(all, r.lat...)
	}
	slices.Sort(all)
	pct := func(p float64) time.Duration { return all[int(p*float64(len(all)-1))] }
	rate := float64(len(all)) / elapsed.Seconds()
	fmt.Printf("sentry signing: concurrency=%d calls=%d duration=%s  %.0f CSRs/s  p50=%s  p99=%s\n",
		conc, len(all), elapsed.Round(time.Millisecond), rate, pct(0.50).Round(time.Microsecond), pct(0.99).Round(time.Microsecond))
	if asJSON {
		b, _ := json.Marshal(map[string]any{
			"name": "sentry_sign", "concurrency": conc, "calls": len(all), "csrs_per_sec": rate,
			"p50_us": pct(0.50).Microseconds(), "p99_us": pct(0.99).Microseconds(),
		})
		fmt.Println(string(b))
	}
	return nil
}
