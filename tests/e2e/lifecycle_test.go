package e2e_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
)

// testHealthzShutdown is bullet 10.
func testHealthzShutdown(t *testing.T, m *mesh) {
	t.Run("Healthz", func(t *testing.T) {
		for _, s := range []*harness.Sidecar{m.frontend, m.orders} {
			for _, p := range []string{"/v1.0/healthz", "/v1.0/healthz/outbound"} {
				r := do(t, nil, http.MethodGet, s.HTTPURL()+p, nil, nil)
				if r.status != http.StatusNoContent || len(r.body) != 0 {
					t.Errorf("%s %s: %d %q, want 204 and no body", s.AppID, p, r.status, r.body)
				}
			}
		}
	})

	// meshd re-executes itself with the sysmon setting (cmd/meshd
	// sysmon.go); the running sidecar (same pid, the exec replaced the
	// image) must carry it.
	t.Run("SysmonSetting", func(t *testing.T) {
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", m.orders.Pid()))
		if err != nil {
			t.Fatal(err)
		}
		for kv := range bytes.SplitSeq(env, []byte{0}) {
			if v, ok := bytes.CutPrefix(kv, []byte("GODEBUG=")); ok && bytes.Contains(v, []byte("schedtrace=2147483647")) {
				return
			}
		}
		t.Fatalf("sidecar environment lacks the sysmon setting: %q", bytes.ReplaceAll(env, []byte{0}, []byte(" ")))
	})

	// A slow streamed call (5 events, 300ms apart) is in flight when one
	// sidecar of the pair gets SIGTERM: it must finish, complete and with
	// 200, and the sidecar must then exit 0.
	t.Run("SIGTERM", func(t *testing.T) {
		slowApp := harness.StartEcho(t, m.bins, "slow-1", 0)
		for _, name := range []string{"callee sidecar", "caller sidecar"} {
			t.Run(name, func(t *testing.T) {
				// A fresh pair each time; the callee's ports are in the resolver file.
				slow := harness.StartSidecar(t, m.bins, m.sentry, harness.SidecarConfig{AppID: appSlow, Ports: m.slowPorts,
					AppPort: slowApp.Port, ResolverFile: m.resolver})
				caller := harness.StartSidecar(t, m.bins, m.sentry, harness.SidecarConfig{AppID: "slowcaller", ResolverFile: m.resolver})
				c := struct {
					name string
					term *harness.Sidecar
				}{name, caller}
				if name == "callee sidecar" {
					c.term = slow
				}
				resp, err := http.Get(caller.HTTPURL() + "/v1.0/invoke/slow/method/sse?n=5&interval=300ms")
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d", resp.StatusCode)
				}
				sc := bufio.NewScanner(resp.Body)
				events, signalled := 0, time.Time{}
				for sc.Scan() {
					if !strings.HasPrefix(sc.Text(), "data: ") {
						continue
					}
					events++
					if events == 1 {
						if err := c.term.Signal(syscall.SIGTERM); err != nil {
							t.Fatal(err)
						}
						signalled = time.Now()
						// New connections are refused at once.
						if err := eventually(t.Context(), 2*time.Second, func() error {
							conn, err := net.DialTimeout("tcp", hostPort(c.term.HTTPURL()), time.Second)
							if err == nil {
								conn.Close()
								return errStillListening
							}
							return nil
						}); err != nil {
							t.Errorf("%s still accepts connections after SIGTERM: %v", c.name, err)
						}
					}
				}
				if err := sc.Err(); err != nil {
					t.Fatalf("in-flight call broken by SIGTERM after %d events: %v", events, err)
				}
				if events != 5 {
					t.Fatalf("in-flight call got %d of 5 events", events)
				}
				if err := c.term.Wait(5 * time.Second); err != nil || c.term.ExitCode() != 0 {
					t.Fatalf("%s after SIGTERM: %v, exit code %d", c.name, err, c.term.ExitCode())
				}
				t.Logf("%s exited 0 %s after SIGTERM, the in-flight call complete", c.name, time.Since(signalled).Round(time.Millisecond))
			})
			if t.Failed() {
				return
			}
		}
	})
}

type errString string

func (e errString) Error() string { return string(e) }

const errStillListening = errString("still listening")
