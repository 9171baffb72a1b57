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
