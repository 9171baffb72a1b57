package freeport

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
)

func TestTake(t *testing.T) {
	seen := map[int]bool{}
	for range 200 {
		p, err := Take()
		if err != nil {
			t.Fatal(err)
		}
		if p < low || p >= ephemeralLow() {
			t.Fatalf("port %d outside [%d, %d)", p, low, ephemeralLow())
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("port %d not bindable: %v", p, err)
		}
		l.Close()
	}
}

func TestTakeSkipsBusyPorts(t *testing.T) {
	p, err := Take()
	if err != nil {
		t.Fatal(err)
	}
	// Hold the next candidate: Take must step over it.
	// (If another process holds it already, it is busy all the same.)
	if busy, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1)); err == nil {
		defer busy.Close()
	}
	q, err := Take()
	if err != nil {
		t.Fatal(err)
	}
	if q == p+1 {
		t.Fatalf("Take returned %d, which is bound", q)
	}
}

func TestEphemeralLow(t *testing.T) {
	if v := ephemeralLow(); v <= low+1024 || v > 65535 {
		t.Fatalf("ephemeralLow = %d", v)
	}
}

// TestClaimAcrossProcesses: a port this process took cannot be claimed by
// another process while this one runs (the child is this test binary).
func TestClaimAcrossProcesses(t *testing.T) {
	if v := os.Getenv("FREEPORT_CLAIM"); v != "" {
		p, _ := strconv.Atoi(v)
		fmt.Print(claim(p))
		os.Exit(0)
	}
	if runtime.GOOS == "windows" {
		t.Skip("claims are flock-based (unix)")
	}
	p, err := Take()
	if err != nil {
		t.Fatal(err)
	}
	child := func(port int) string {
		cmd := exec.Command(os.Args[0], "-test.run=^TestClaimAcrossProcesses$")
		cmd.Env = append(os.Environ(), "FREEPORT_CLAIM="+strconv.Itoa(port))
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("child: %v", err)
		}
		return string(out)
	}
	if got := child(p); got != "false" {
		t.Fatalf("another process claimed port %d that this one holds: %q", p, got)
	}
}
