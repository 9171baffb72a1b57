package identity_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry/sentryclient"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// workload is a certs.Source fed by a sentry client, with the client's
// bundle pushed into the Source.
type workload struct {
	id     certs.Identity
	client *sentryclient.Client
	src    *certs.Source
}

func newWorkload(t *testing.T, p *sentryProc, anchors []*x509.Certificate, app string) *workload {
	t.Helper()
	id, err := certs.NewIdentity("cluster.local", "default", app)
	if err != nil {
		t.Fatal(err)
	}
	c, err := sentryclient.New(context.Background(), p.addr, anchors, id, p.token(t, app, "default"),
		sentryclient.WithBackoff(50*time.Millisecond, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src, err := certs.NewSource(ctx, c, certs.SourceOptions{Identity: id, Logger: slog.New(slog.DiscardHandler),
		MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.WatchBundle(wctx, func(roots []*x509.Certificate) {
			if err := src.SetRoots(roots); err != nil && !errors.Is(err, certs.ErrSourceClosed) {
				t.Errorf("SetRoots: %v", err)
			}
		})
	}()
	t.Cleanup(func() {
		wcancel()
		<-done
		src.Close()
		c.Close()
	})
	return &workload{id: id, client: c, src: src}
}

// TestRenewalAndRotationUnderTraffic: sentry binary with --workload-ttl 10s;
// an mTLS server and a client, each on a certs.Source fed by sentryclient,
// talk in a loop (a new TLS handshake per request) for 30s while the
// certificates renew several times and the root is rotated with
// `sentry rotate-root`. Not one request may fail, and both end up with a
// bundle holding only the new root.
func TestRenewalAndRotationUnderTraffic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sentry")
	p := startSentry(t, dir, "--workload-ttl", "10s", "--rotation-propagation-delay", "2s", "--rotation-retire-margin", "1s")
	oldRoots := p.bundle(t)

	server := newWorkload(t, p, oldRoots, "orders")
	client := newWorkload(t, p, oldRoots, "frontend")

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srvTLS := tlsconfig.MTLSServerConfig(server.src, server.src, tlsconfig.AuthorizeID(client.id.ID()))
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "ok")
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = hs.Serve(tls.NewListener(lis, srvTLS)) }()
	defer hs.Close()

	cliTLS := tlsconfig.MTLSClientConfig(client.src, client.src, tlsconfig.AuthorizeID(server.id.ID()))
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cliTLS, DisableKeepAlives: true}}
	url := "https://" + lis.Addr().String() + "/"

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				resp, err := hc.Get(url)
				if err == nil {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK || string(body) != "ok" {
						err = errors.New("bad answer: " + resp.Status)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				} else {
					ok.Add(1)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}

	time.Sleep(5 * time.Second)
	rotateRoot(t, dir)
	var newRoot *x509.Certificate
	waitFor(t, 10*time.Second, "new root in bundle.pem", func() bool {
		r := p.bundle(t)
		if len(r) == 2 {
			newRoot = r[1]
			return true
		}
		return false
	})
	end := time.Now().Add(25 * time.Second)
	time.Sleep(time.Until(end))
	cancel()
	wg.Wait()

	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d requests failed; first: %v", n, n+ok.Load(), firstErr.Load())
	}
	if ok.Load() < 200 {
		t.Errorf("only %d requests succeeded in 30s", ok.Load())
	}
	for _, w := range []*workload{server, client} {
		if r := w.src.Rotations(); r < 2 {
			t.Errorf("%s renewed %d times in 30s with a 10s TTL, want >= 2", w.id, r)
		}
		b, err := w.src.GetX509BundleForTrustDomain(w.id.TrustDomain)
		if err != nil {
			t.Fatal(err)
		}
		if !certs.SameRoots(b.X509Authorities(), []*x509.Certificate{newRoot}) {
			t.Errorf("%s holds %d roots after the rotation, want only the new one", w.id, len(b.X509Authorities()))
		}
		svid, err := w.src.GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		if err := svid.Certificates[len(svid.Certificates)-1].CheckSignatureFrom(newRoot); err != nil {
			t.Errorf("%s's certificate is not issued under the new root: %v", w.id, err)
		}
	}
	if r := p.bundle(t); !certs.SameRoots(r, []*x509.Certificate{newRoot}) {
		t.Errorf("bundle.pem holds %d roots, want only the new one", len(r))
	}
	t.Logf("%d requests, 0 failed; renewals: server %d, client %d", ok.Load(), server.src.Rotations(), client.src.Rotations())
}
