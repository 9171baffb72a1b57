//go:build soak

// Package soak holds long-running end-to-end tests, run by `make soak`
// (not by `make test`): sustained calls through a real sidecar pair across
// many certificate renewals and a root rotation, with zero failed calls.
package soak

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
)

// TestSoakRotations calls orders through frontend's sidecar from 8 clients
// for SOAK_DURATION (default 10m) while workload certificates renew every
// ~10s and the root is rotated twice; every call must succeed.
func TestSoakRotations(t *testing.T) {
	dur := 10 * time.Minute
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SOAK_DURATION: %v", err)
		}
		dur = d
	}
	b := harness.Build(t)
	s := harness.StartSentry(t, b, "", "--workload-ttl", "20s",
		"--rotation-propagation-delay", "3s", "--rotation-retire-margin", "5s")
	app := harness.StartEcho(t, b, "orders-1", 0)
	front, orders := harness.NewSidecarPorts(t), harness.NewSidecarPorts(t)
	static := filepath.Join(t.TempDir(), "apps.yaml")
	harness.WriteStatic(t, static,
		harness.StaticApp{AppID: "frontend", Addresses: []string{front.InternalAddr()}},
		harness.StaticApp{AppID: "orders", Addresses: []string{orders.InternalAddr()}})
	harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "orders", AppPort: app.Port, Ports: orders, ResolverFile: static})
	caller := harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "frontend", Ports: front, ResolverFile: static})

	url := caller.HTTPURL() + "/v1.0/invoke/orders/method/soak"
	var calls, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	body := bytes.Repeat([]byte("x"), 1024)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 10 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Post(url, "application/octet-stream", bytes.NewReader(body))
				calls.Add(1)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %s", resp.Status)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	// Two root rotations, at a third and two thirds of the run.
	for i := 1; i <= 2; i++ {
		time.Sleep(dur / 3)
		out, err := exec.Command(b.Sentry, "rotate-root", "--data-dir", s.DataDir).CombinedOutput()
		if err != nil {
			t.Errorf("rotate-root: %v\n%s", err, out)
		}
		t.Logf("rotation %d staged after %d calls (%d failed)", i, calls.Load(), failed.Load())
	}
	time.Sleep(dur / 3)
	close(stop)
	wg.Wait()
	t.Logf("%d calls in %s, %d failed", calls.Load(), dur, failed.Load())
	if calls.Load() == 0 {
		t.Fatal("no calls made")
	}
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d calls failed; first: %v", n, calls.Load(), firstErr.Load())
	}
}
