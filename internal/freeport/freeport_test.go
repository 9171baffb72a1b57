package freeport

import (
	"net"
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
