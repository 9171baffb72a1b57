package xds_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshd/meshd/tests/harness"
)

// register puts one instance of app into Consul the way the consul
// backend's selfRegister does (DAPR_PORT and namespace in meta), as an
// orchestrator would for sidecars that resolve through the control plane.
func register(t *testing.T, c *api.Client, app, id string, p harness.SidecarPorts) {
	t.Helper()
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: id, Name: app, Address: "127.0.0.1",
		Port: p.Internal, Meta: map[string]string{"DAPR_PORT": strconv.Itoa(p.Internal), "namespace": "default"}})
	if err != nil {
		t.Fatal(err)
	}
}

// TestConsulBackend: the control plane watches a real Consul agent;
// sidecars on --resolver xds follow an app scaling up and down; a control
// plane restart in the middle of continuous calls fails none of them, and
// after it the sidecars follow changes again.
func TestConsulBackend(t *testing.T) {
	b := harness.Build(t)
	agent := harness.StartConsul(t)
	s := harness.StartSentry(t, b, "")
	cfg := filepath.Join(t.TempDir(), "consul.yaml")
	if err := os.WriteFile(cfg, []byte("client:\n  address: "+agent.Addr()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cc, err := api.NewClient(&api.Config{Address: agent.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	p := []harness.SidecarPorts{harness.NewSidecarPorts(t), harness.NewSidecarPorts(t), harness.NewSidecarPorts(t)}
	register(t, cc, "orders", "orders-0", p[0])
	cp := harness.StartControlPlane(t, b, s, "--resolver", "consul", "--resolver-config", cfg)
	for i := range p {
		e := harness.StartEcho(t, b, "o"+strconv.Itoa(i), 0)
		xdsSidecar(t, b, s, cp, harness.SidecarConfig{AppID: "orders", AppPort: e.Port, Ports: p[i]})
	}
	front := xdsSidecar(t, b, s, cp, harness.SidecarConfig{AppID: "frontend"})

	if got := spread(t, front, "orders", 10); got["o0"] != 10 {
		t.Fatalf("one registered instance: answers %v", got)
	}
	// Scale up: two more instances registered.
	start := time.Now()
	register(t, cc, "orders", "orders-1", p[1])
	register(t, cc, "orders", "orders-2", p[2])
	eventually(t, 10*time.Second, "scale up followed", func() error {
		if got := spread(t, front, "orders", 9); got["o1"] == 0 || got["o2"] == 0 {
			return fmt.Errorf("answers %v", got)
		}
		return nil
	})
	t.Logf("scale up (Consul register → calls reach the new instances): %s", time.Since(start).Round(time.Millisecond))
	// Scale down.
	start = time.Now()
	if err := cc.Agent().ServiceDeregister("orders-0"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "scale down followed", func() error {
		if got := spread(t, front, "orders", 10); got["o0"] != 0 {
			return fmt.Errorf("answers %v", got)
		}
		return nil
	})
	t.Logf("scale down followed after %s", time.Since(start).Round(time.Millisecond))

	// Continuous calls through a control plane restart: none may fail.
	var calls, failures atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, who, err := call(front, "orders", "who")
				calls.Add(1)
				if err != nil || code != http.StatusOK {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %s %v", code, who, err))
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	cp.Restart(t)
	time.Sleep(time.Second) // calls go on while the sidecars reconnect
	close(stop)
	wg.Wait()
	if failures.Load() != 0 {
		t.Errorf("control plane restart: %d of %d calls failed (first: %v)", failures.Load(), calls.Load(), firstErr.Load())
	}
	t.Logf("control plane restart: %d calls, %d failed", calls.Load(), failures.Load())

	// After the restart the sidecars follow changes again.
	register(t, cc, "orders", "orders-0", p[0])
	if err := cc.Agent().ServiceDeregister("orders-2"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "changes followed after the restart", func() error {
		if got := spread(t, front, "orders", 10); got["o0"] == 0 || got["o2"] != 0 {
			return fmt.Errorf("answers %v", got)
		}
		return nil
	})
}
