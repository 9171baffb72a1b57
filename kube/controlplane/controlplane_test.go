package controlplane

import (
	"strings"
	"testing"
)

func TestComponentsRefuses(t *testing.T) {
	if c, err := Components(Options{}, nil); err != nil || c != nil {
		t.Errorf("nothing selected: %v %v", c, err)
	}
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{AppServices: true, PolicySource: "git"}, "--policy-source"},
		{Options{PolicySource: "kubernetes"}, "--policy-dir"},
		{Options{AppServices: true, Kubeconfig: "/nonexistent/kubeconfig"}, "--kubeconfig"},
	} {
		if _, err := Components(c.o, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %s", c.o, err, c.want)
		}
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := Components(Options{AppServices: true}, nil); err == nil || !strings.Contains(err.Error(), "not in a pod") {
		t.Errorf("no kubeconfig outside a pod: %v", err)
	}
}

func TestElectionRefuses(t *testing.T) {
	for _, e := range []Election{
		{LeaseDuration: 5e9, RenewDeadline: 5e9, RetryPeriod: 1e9},
		{LeaseDuration: 5e9, RenewDeadline: 3e9, RetryPeriod: 3e9},
		{LeaseDuration: 5e9, RenewDeadline: 3e9, RetryPeriod: -1},
		{LeaseDuration: 2e9}, // below the default renew deadline
	} {
		if err := e.setDefaults(); err == nil || !strings.Contains(err.Error(), "--leader-elect-retry-period") {
			t.Errorf("%+v: %v, want the order of the three durations", e, err)
		}
	}
	t.Setenv("POD_NAME", "meshd-controlplane-7")
	a, b := Election{}, Election{}
	if err := a.setDefaults(); err != nil {
		t.Fatal(err)
	}
	_ = b.setDefaults()
	if !strings.HasPrefix(a.Identity, "meshd-controlplane-7_") || a.Identity == b.Identity {
		t.Errorf("identities %q, %q: want the pod name and a suffix unique per start", a.Identity, b.Identity)
	}
}
