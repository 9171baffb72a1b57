package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/meshd/meshd/tests/harness"
)

// spread makes n GETs to inventory through the caller and counts the
// answering instances; failed calls are counted under "".
func spread(t *testing.T, m *mesh, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := 0; i < n; i++ {
		r := do(t, nil, http.MethodGet, fmt.Sprintf("%s/v1.0/invoke/%s/method/who?i=%d", m.frontend.HTTPURL(), appInv, i), nil, nil)
		if r.status != http.StatusOK {
			t.Errorf("call %d: %d %s", i, r.status, r.body)
			got[""]++
			continue
		}
		got[decodeEcho(t, r).Name]++
	}
	return got
}

// testRoundRobin is bullet 6.
func testRoundRobin(t *testing.T, m *mesh) {
	got := spread(t, m, 300)
	for _, name := range []string{"i1", "i2", "i3"} {
		if n := got[name]; n < 95 || n > 105 {
			t.Errorf("%s answered %d of 300 calls, want 100±5 (all: %v)", name, n, got)
		}
	}
	if len(got) != 3 {
		t.Errorf("answers from %v, want only i1, i2, i3", got)
	}
}

// testFailover is bullet 7: an instance whose app fails (health probe) or
// dies costs no failed call, gets no traffic, and gets traffic again once
// it is back.
func testFailover(t *testing.T, m *mesh) {
	outer := t // a restarted app must outlive the subtest that restarts it
	caller := genuineSource(t, m, "probe")
	invID := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/" + appInv)
	t.Run("HealthCheckFails", func(t *testing.T) {
		app := m.inventoryApps[1] // i2
		mustGet(t, "http://"+app.Addr()+"/admin/fail", http.StatusOK)
		// Give the sidecar's probe (200ms, threshold 1) time to notice.
		time.Sleep(800 * time.Millisecond)
		start := time.Now()
		got := spread(t, m, 300)
		took := time.Since(start)
		// i2's sidecar itself answers 503 at once, without asking its app.
		inbound := internalClient(tlsconfig.MTLSClientConfig(caller, caller, tlsconfig.AuthorizeID(invID)))
		t0 := time.Now()
		r := do(t, inbound, http.MethodGet, "https://"+m.inventory[1].Ports.InternalAddr()+"/who", nil, nil)
		assertError(t, "i2's sidecar, app unhealthy", r, http.StatusServiceUnavailable, "ERR_APP_UNHEALTHY")
		if d := time.Since(t0); d > time.Second || r.header.Get("Meshd-Short-Circuit") != "app-unhealthy" {
			t.Errorf("i2's sidecar answered after %s with Meshd-Short-Circuit %q; want at once, app-unhealthy", d, r.header.Get("Meshd-Short-Circuit"))
		}
		if got["i2"] != 0 || got[""] != 0 || got["i1"]+got["i3"] != 300 {
			t.Fatalf("with i2 unhealthy: %v; want 300 answers from i1 and i3 only", got)
		}
		mustGet(t, "http://"+app.Addr()+"/admin/recover", http.StatusOK)
		back := waitBack(t, m, "i2", recoveryLimit(took))
		t.Logf("i2 answered again %s after /admin/recover", back)
		if e := decodeEcho(t, do(t, inbound, http.MethodGet, "https://"+m.inventory[1].Ports.InternalAddr()+"/who", nil, nil)); e.Name != "i2" {
			t.Errorf("i2's sidecar, app healthy again: answered by %q", e.Name)
		}
	})

	t.Run("AppKilled", func(t *testing.T) {
		app := m.inventoryApps[2] // i3
		app.Kill()
		start := time.Now()
		got := spread(t, m, 300)
		took := time.Since(start)
		if got["i3"] != 0 || got[""] != 0 || got["i1"]+got["i2"] != 300 {
			t.Fatalf("with i3's app dead: %v; want 300 answers from i1 and i2 only", got)
		}
		m.inventoryApps[2] = harness.StartEcho(outer, m.bins, "i3", app.Port)
		back := waitBack(t, m, "i3", recoveryLimit(took))
		t.Logf("i3 answered again %s after its app restarted", back)
	})

	// Everything is back: the spread is even again.
	got := spread(t, m, 300)
	keys := make([]string, 0, len(got))
	for k := range got {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, name := range []string{"i1", "i2", "i3"} {
		if n := got[name]; n < 95 || n > 105 {
			t.Errorf("after recovery %s answered %d of 300, want 100±5 (%v)", name, n, got)
		}
	}
}

// recoveryLimit is how long an instance that is healthy again may stay
// without traffic: the rest of its first ejection (5s, from the first
// short-circuit at the start of the calls) plus two probes; if the calls
// took longer than the ejection, it was ejected a second time for 10s.
func recoveryLimit(callsTook time.Duration) time.Duration {
	if callsTook < 4500*time.Millisecond {
		return 5*time.Second + 500*time.Millisecond
	}
	return 10*time.Second + 500*time.Millisecond
}

// waitBack calls inventory until name answers, failing on any failed call.
// The caller ejected the instance for the base ejection time (5s) when its
// sidecar first short-circuited; within that time plus a probe it must be
// back.
func waitBack(t *testing.T, m *mesh, name string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	err := eventually(context.Background(), limit, func() error {
		r := do(t, nil, http.MethodGet, m.frontend.HTTPURL()+"/v1.0/invoke/"+appInv+"/method/who", nil, nil)
		if r.status != http.StatusOK {
			t.Fatalf("call failed while %s recovers: %d %s", name, r.status, r.body)
		}
		if n := decodeEcho(t, r).Name; n != name {
			return fmt.Errorf("answered by %s", n)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s gets no traffic again: %v", name, err)
	}
	return time.Since(start).Round(10 * time.Millisecond)
}
