package discovery_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
	"github.com/meshd/meshd/tests/netnstest"
)

// whoAnswered calls app through sc and returns the answering instance.
func whoAnswered(sc *harness.Sidecar, app string) (string, error) {
	resp, err := client.Get(sc.HTTPURL() + "/v1.0/invoke/" + app + "/method/who")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%d %s", resp.StatusCode, b)
	}
	var e struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return "", err
	}
	return e.Name, nil
}

// TestXDSControlPlaneFollowsSlices: the xDS control plane (cmd/controlplane)
// watches the real API server once; meshd sidecars on --resolver xds, which
// never talk to the API server, follow the EndpointSlices of an app
// scaling up and down.
func TestXDSControlPlaneFollowsSlices(t *testing.T) {
	if !netnstest.Run(t, netnstest.Opts{}) {
		return
	}
	ips := []string{"10.244.0.11", "10.244.0.12"}
	addPodIPs(t, append([]string{"10.244.0.2"}, ips...)...)
	k := harness.StartKube(t)
	b := harness.Build(t)
	s := harness.StartSentry(t, b, "")
	ensureNamespace(t, k.Client(), "shop")
	cp := harness.StartControlPlane(t, b, s, "--resolver", "kubernetes",
		"--resolver-config", resolverConfig(t, "kubeconfig: "+k.Kubeconfig+"\nnamespaces: [shop]\n"))
	xdsCfg := harness.XDSResolverFile(t, cp.Addr)
	sidecar := func(app, ip string, appPort int) *harness.Sidecar {
		ports := harness.NewSidecarPorts(t)
		ports.Internal = internalPort
		return harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: app, Namespace: "shop", AppPort: appPort, Ports: ports,
			Extra: []string{"--listen-address", ip, "--resolver", "xds", "--resolver-config", xdsCfg}})
	}
	for i, ip := range ips {
		a := harness.StartEcho(t, b, fmt.Sprintf("orders-%d", i+1), 0)
		sidecar("orders", ip, a.Port)
	}
	caller := sidecar("frontend", "10.244.0.2", 0)
	cs := k.Client()
	slice := func(eps ...ep) { applySlice(t, cs, sliceFor("shop", "orders-abc12", "orders", eps...)) }
	follow := func(what string, want ...string) {
		t.Helper()
		start := time.Now()
		harness.WaitFor(t, 10*time.Second, func(context.Context) error {
			got := map[string]int{}
			for i := 0; i < 10*len(want); i++ {
				name, err := whoAnswered(caller, "orders")
				if err != nil {
					return err
				}
				got[name]++
			}
			if len(got) != len(want) {
				return fmt.Errorf("answers %v, want only %v", got, want)
			}
			for _, w := range want {
				if got[w] == 0 {
					return fmt.Errorf("answers %v, want %v", got, want)
				}
			}
			return nil
		})
		t.Logf("%s: followed within %s", what, time.Since(start).Round(time.Millisecond))
	}
	slice(readyEP(ips[0]))
	follow("one pod", "orders-1")
	slice(readyEP(ips[0]), readyEP(ips[1]))
	follow("scale up to two pods", "orders-1", "orders-2")
	slice(readyEP(ips[1]), ep{ip: ips[0], serving: true, terminating: true})
	follow("scale down: orders-1 terminating", "orders-2")
}
