package sentry_test

import (
	"context"
	"crypto/x509"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry"
	"github.com/meshd/meshd/sentry/ca"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// TestRootRotationUnderLoad rotates the root while clients that only ever
// held the old bundle keep asking for certificates: no call may fail, the
// new root is published before anything is signed under it, and the clients
// end up with the new bundle from the stream.
func TestRootRotationUnderLoad(t *testing.T) {
	t.Parallel()
	s := startSentry(t, "", func(c *sentry.Config) { c.CA.WorkloadTTL = 5 * time.Second })
	oldRoots := s.bundleFile(t)
	if len(oldRoots) != 1 {
		t.Fatalf("fresh sentry has %d roots", len(oldRoots))
	}
	oldRoot := oldRoots[0]

	const workers = 4
	type worker struct {
		c interface {
			Roots() ([]*x509.Certificate, uint64)
		}
		calls   atomic.Int64
		failure atomic.Value
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var ws []*worker
	var sawNewBeforeBundle atomic.Bool
	for i := range workers {
		id := s.identity(t, "default", "app"+string(rune('a'+i)))
		c := s.client(t, oldRoots, id, s.token(t, id, time.Hour, time.Now()))
		w := &worker{c: c}
		ws = append(ws, w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				key := p256(t)
				iss, err := c.Fetch(ctx, csrPEM(t, key, nil))
				if ctx.Err() != nil {
					return
				}
				w.calls.Add(1)
				if err != nil {
					w.failure.Store(err.Error())
					continue
				}
				// Whatever signed it, its root was in the bundle returned
				// with it (published first).
				if _, _, err := x509svid.Verify(iss.Chain, bundleOf(s, iss.Roots)); err != nil {
					sawNewBeforeBundle.Store(true)
					w.failure.Store("issued cert does not verify against returned bundle: " + err.Error())
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)

	m, err := sentry.RotateRoot(s.dir, sentry.RotateFiles{}, 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	newRoot := m.Root
	// 1. published: bundle file and every client hold old + new.
	waitFor(t, 5*time.Second, "bundle file with both roots", func() bool {
		return certs.SameRoots(s.bundleFile(t), []*x509.Certificate{oldRoot, newRoot})
	})
	for i, w := range ws {
		waitFor(t, 5*time.Second, "client bundle with both roots", func() bool {
			r, _ := w.c.Roots()
			return certs.SameRoots(r, []*x509.Certificate{oldRoot, newRoot})
		})
		_ = i
	}
	// 2. switched: signing (and the serving cert) use the new issuer.
	waitFor(t, 5*time.Second, "switch to the new issuer", func() bool {
		return s.srv.Authority().ActiveRoot().Equal(newRoot)
	})
	svid, _ := s.srv.Authority().GetX509SVID()
	if _, _, err := x509svid.Verify(svid.Certificates, bundleOf(s, []*x509.Certificate{newRoot})); err != nil {
		t.Errorf("sentry's serving cert is not under the new root after the switch: %v", err)
	}
	// 3. retired: old root leaves the bundle after workload TTL + margin.
	waitFor(t, 15*time.Second, "old root retired from bundle.pem", func() bool {
		return certs.SameRoots(s.bundleFile(t), []*x509.Certificate{newRoot})
	})
	for _, w := range ws {
		waitFor(t, 5*time.Second, "client bundle with only the new root", func() bool {
			r, _ := w.c.Roots()
			return certs.SameRoots(r, []*x509.Certificate{newRoot})
		})
	}
	// A few more calls after the retirement, on connections made under the
	// old serving cert and on new ones.
	time.Sleep(300 * time.Millisecond)
	cancel()
	wg.Wait()
	for i, w := range ws {
		if f := w.failure.Load(); f != nil {
			t.Errorf("worker %d: a call failed during rotation: %v", i, f)
		}
		if w.calls.Load() < 20 {
			t.Errorf("worker %d made only %d calls", i, w.calls.Load())
		}
	}
	if sawNewBeforeBundle.Load() {
		t.Error("a certificate was signed under a root that was not yet published")
	}
	// A brand-new client that only holds the old bundle would now fail:
	// that is expected (fail closed), but a client that followed the
	// stream connects. Check the second with a fresh call.
	id := s.identity(t, "default", "late")
	c := s.client(t, []*x509.Certificate{newRoot}, id, s.token(t, id, time.Hour, time.Now()))
	if _, err := c.Fetch(context.Background(), csrPEM(t, p256(t), nil)); err != nil {
		t.Fatalf("client with the new root: %v", err)
	}
	stale := s.client(t, []*x509.Certificate{oldRoot}, id, s.token(t, id, time.Hour, time.Now()))
	fctx, fcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer fcancel()
	if _, err := stale.Fetch(fctx, csrPEM(t, p256(t), nil)); err == nil {
		t.Fatal("a client trusting only the retired root connected to sentry")
	}
}

func bundleOf(s *testSentry, roots []*x509.Certificate) *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(s.td, roots)
}

// TestRestartKeepsRoot: a sentry restarted on the same data dir serves the
// same bundle, and certificates from before the restart still verify.
func TestRestartKeepsRoot(t *testing.T) {
	t.Parallel()
	s := startSentry(t, "")
	before := s.bundleFile(t)
	id := s.identity(t, "default", "orders")
	c := s.client(t, before, id, s.token(t, id, time.Hour, time.Now()))
	iss, err := c.Fetch(context.Background(), csrPEM(t, p256(t), nil))
	if err != nil {
		t.Fatal(err)
	}
	s.stop()

	s2 := startSentry(t, s.dir)
	after := s2.bundleFile(t)
	if !certs.SameRoots(before, after) {
		t.Fatal("restart on the same data dir changed the bundle")
	}
	if _, _, err := x509svid.Verify(iss.Chain, bundleOf(s2, after)); err != nil {
		t.Fatalf("cert from before the restart: %v", err)
	}
	if !s2.srv.Authority().ActiveRoot().Equal(before[0]) {
		t.Fatal("restart changed the active root")
	}
	c2 := s2.client(t, before, id, s2.token(t, id, time.Hour, time.Now()))
	if _, err := c2.Fetch(context.Background(), csrPEM(t, p256(t), nil)); err != nil {
		t.Fatalf("fetch after restart: %v", err)
	}
}

// TestRestartMidRotation: a sentry stopped between publishing a new root and
// switching to it continues the rotation after a restart.
func TestRestartMidRotation(t *testing.T) {
	t.Parallel()
	s := startSentry(t, "", func(c *sentry.Config) {
		c.CA.WorkloadTTL = 5 * time.Second
		c.CA.PropagationDelay = time.Hour // never switches in this run
	})
	old := s.bundleFile(t)[0]
	m, err := sentry.RotateRoot(s.dir, sentry.RotateFiles{}, 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "new root published", func() bool { return len(s.bundleFile(t)) == 2 })
	if !s.srv.Authority().ActiveRoot().Equal(old) {
		t.Fatal("switched before the propagation delay")
	}
	s.stop()

	s2 := startSentry(t, s.dir, func(c *sentry.Config) { c.CA.WorkloadTTL = 5 * time.Second })
	if !certs.SameRoots(s2.bundleFile(t), []*x509.Certificate{old, m.Root}) {
		t.Fatal("restart lost the published root")
	}
	waitFor(t, 5*time.Second, "switch after restart", func() bool { return s2.srv.Authority().ActiveRoot().Equal(m.Root) })
	waitFor(t, 15*time.Second, "old root retired after restart", func() bool {
		return certs.SameRoots(s2.bundleFile(t), []*x509.Certificate{m.Root})
	})
	_ = ca.BundleFile
}
