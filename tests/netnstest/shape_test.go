package netnstest

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLossAndRate: Loss(100) on a host drops every packet to it (a dial to
// a closed port times out instead of being refused), Loss(0) heals it;
// Rate puts a tbf qdisc on the host's link and takes it off; bad values
// are refused.
func TestLossAndRate(t *testing.T) {
	nt := NewNet(t, "a", "b")
	if ok, why := nt.LossAvailable(); !ok {
		t.Skipf("no packet loss here: %s", why)
	}
	a, b := nt.Hosts["a"], nt.Hosts["b"]
	dial := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		c, err := a.DialContext(ctx, "tcp", b.Addr+":9")
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial to a closed port of b: %v; want refused", err)
	}
	if err := b.Loss(100); err != nil {
		t.Fatal(err)
	}
	if err := dial(); err == nil || errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial with 100%% loss on b: %v; want a timeout", err)
	}
	if err := b.Loss(0); err != nil {
		t.Fatal(err)
	}
	if err := dial(); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial after the loss was removed: %v; want refused", err)
	}
	if err := b.Loss(101); err == nil {
		t.Fatal("Loss(101) accepted")
	}
	qdisc := func() string {
		out, err := exec.Command("tc", "-n", b.NS, "qdisc", "show", "dev", "eth0").CombinedOutput()
		if err != nil {
			t.Fatalf("tc qdisc show: %v: %s", err, out)
		}
		return string(out)
	}
	if err := b.Rate("1mbit", "100ms"); err != nil {
		t.Fatal(err)
	}
	if q := qdisc(); !strings.Contains(q, "tbf") || !strings.Contains(q, "1Mbit") {
		t.Fatalf("qdisc after Rate: %s", q)
	}
	if err := b.Rate("", ""); err != nil {
		t.Fatal(err)
	}
	if q := qdisc(); strings.Contains(q, "tbf") {
		t.Fatalf("qdisc after Rate(\"\"): %s", q)
	}
	if err := b.Rate("fast", "100ms"); err == nil {
		t.Fatal(`Rate("fast") accepted`)
	}
}
