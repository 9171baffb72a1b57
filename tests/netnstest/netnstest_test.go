package netnstest

import (
	"strings"
	"testing"
)

func TestCheckRefusesOutsideAChild(t *testing.T) {
	if InChild() {
		t.Skip("runs in the parent only")
	}
	err := check()
	if err == nil {
		t.Fatal("check() passed in the test's own namespace")
	}
	if !strings.Contains(err.Error(), "root network namespace") && !strings.Contains(err.Error(), "not a child") {
		t.Fatalf("unexpected reason: %v", err)
	}
	if err := SetupLoopback(); err == nil || !strings.Contains(err.Error(), "SAFETY") {
		t.Fatalf("SetupLoopback outside a child: %v", err)
	}
}

func TestChildIsIsolated(t *testing.T) {
	if !Run(t, Opts{}) {
		return
	}
	if err := check(); err != nil {
		t.Fatal(err)
	}
}

func TestPattern(t *testing.T) {
	if got := testPattern("TestA/sub.x"); got != `^TestA$/^sub\.x$` {
		t.Fatal(got)
	}
}
