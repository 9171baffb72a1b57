package harness

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"
)

// ConsulVersion is the Consul release the tests run: the last MPL-2.0 one
// the Go module proxy serves (later releases are BUSL-licensed).
const ConsulVersion = "v1.16.3"

var consulTool = &cachedTool{name: "consul", version: ConsulVersion, envVar: "MESHD_CONSUL_BIN",
	script: "tests/consul/install.sh", timeout: 20 * time.Minute}

// ConsulBinary returns the path of the Consul binary, building it with
// tests/consul/install.sh into .cache/consul/{version}/ the first time (a
// few minutes on 2 cores; logged). MESHD_CONSUL_BIN overrides the path.
func ConsulBinary(t testing.TB) string { return consulTool.binary(t) }

// Consul is a running `consul agent -dev` on loopback, all ports free
// ephemeral ones.
type Consul struct {
	*Process
	bin                                    string
	HTTPPort, ServerPort, SerfLAN, SerfWAN int
	t                                      testing.TB
}

// Addr is the agent's HTTP address (host:port).
func (c *Consul) Addr() string { return "127.0.0.1:" + strconv.Itoa(c.HTTPPort) }

// StartConsul builds Consul if needed, starts a dev agent on loopback and
// waits until it has a leader. It is stopped when the test ends.
func StartConsul(t testing.TB) *Consul {
	t.Helper()
	c := &Consul{bin: ConsulBinary(t), t: t,
		HTTPPort: FreePort(t), ServerPort: FreePort(t), SerfLAN: FreePort(t), SerfWAN: FreePort(t)}
	c.start()
	return c
}

func (c *Consul) start() {
	c.t.Helper()
	args := []string{"agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-port", strconv.Itoa(c.HTTPPort), "-server-port", strconv.Itoa(c.ServerPort),
		"-serf-lan-port", strconv.Itoa(c.SerfLAN), "-serf-wan-port", strconv.Itoa(c.SerfWAN),
		"-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1",
		"-log-level", "warn", "-node", "meshd-test"}
	old := os.Getenv("CHECKPOINT_DISABLE")
	os.Setenv("CHECKPOINT_DISABLE", "1") // inherited by Start's environment
	c.Process = Start(c.t, "consul@"+strconv.Itoa(c.HTTPPort), c.bin, args...)
	os.Setenv("CHECKPOINT_DISABLE", old)
	if err := c.waitLeader(30 * time.Second); err != nil {
		c.t.Fatalf("%v\n%s", err, c.Log())
	}
}

func (c *Consul) waitLeader(d time.Duration) error {
	deadline := time.Now().Add(d)
	url := "http://" + c.Addr() + "/v1/status/leader"
	var last string
	for time.Now().Before(deadline) {
		if c.Exited() {
			return fmt.Errorf("consul exited: %v", c.Wait(0))
		}
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && len(bytes.Trim(bytes.TrimSpace(b), `"`)) > 0 {
				return nil
			}
			last = resp.Status + " " + string(b)
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("consul at %s has no leader after %s (last: %s)", c.Addr(), d, last)
}

// Restart stops the agent and starts a new one on the same ports: a -dev
// agent keeps nothing, so every registration is gone.
func (c *Consul) Restart(down time.Duration) {
	c.t.Helper()
	c.Stop(5 * time.Second)
	time.Sleep(down)
	c.start()
}
