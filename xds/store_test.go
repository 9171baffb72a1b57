package xds

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/meshd/meshd/discovery"
)

// TestStoreHealth: the backend's health reaches the ClusterLoadAssignment
// (UNHEALTHY), survives an update that keeps the address, and only real
// changes mark an app dirty.
func TestStoreHealth(t *testing.T) {
	s := newStore()
	app := discovery.Target{AppID: "orders", Namespace: "default"}
	s.UpdateTarget(app, []discovery.Endpoint{{Address: "127.0.0.1:1"}, {Address: "127.0.0.1:2"}, {Address: "127.0.0.1:2"}})
	if got := s.take()[app]; len(got) != 2 || !got[0].Healthy || !got[1].Healthy {
		t.Fatalf("first take: %v", got)
	}
	s.SetHealth(app, "127.0.0.1:2", false)
	s.SetHealth(app, "127.0.0.1:9", false) // unknown address: ignored
	eps := s.take()[app]
	if len(eps) != 2 || eps[1].Healthy {
		t.Fatalf("after SetHealth: %v", eps)
	}
	cla, err := LoadAssignment(app, eps)
	if err != nil {
		t.Fatal(err)
	}
	if h := cla.GetEndpoints()[0].GetLbEndpoints()[1].GetHealthStatus(); h != corev3.HealthStatus_UNHEALTHY {
		t.Errorf("health in the CLA: %v", h)
	}
	s.SetHealth(app, "127.0.0.1:2", false) // no change
	s.UpdateTarget(app, []discovery.Endpoint{{Address: "127.0.0.1:1"}, {Address: "127.0.0.1:2"}})
	if got := s.take(); len(got) != 0 {
		t.Errorf("no change, yet dirty: %v", got)
	}
	s.UpdateTarget(app, []discovery.Endpoint{{Address: "127.0.0.1:2"}, {Address: "127.0.0.1:3"}})
	if got := s.take()[app]; len(got) != 2 || got[0].Healthy || !got[1].Healthy {
		t.Errorf("health kept across an update: %v", got)
	}
	s.ReplaceAll(map[discovery.Target][]discovery.Endpoint{})
	if got, ok := s.take()[app]; !ok || got != nil {
		t.Errorf("after ReplaceAll without the app: %v %v", got, ok)
	}
	s.UpdateTarget(app, nil)
	if got := s.take()[app]; got == nil || len(got) != 0 {
		t.Errorf("an app with no endpoints must stay known (empty, not nil): %v", got)
	}
}
