package netnstest

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Hosts are two named network namespaces ("hosts") A and B joined by a veth
// pair, each with lo up, its veth end up with an address in 10.231.N.0/24
// and a 224.0.0.0/4 route on it. Made by NewHosts, removed when the test
// ends (with any process still running in them).
type Hosts struct {
	A, B       string // namespace names
	IfA, IfB   string // veth ends
	AddrA      string // IPv4 address of IfA
	AddrB      string // IPv4 address of IfB
	subnetByte int
}

// NewHosts creates the two namespaces (root only: it skips tb otherwise).
// It is called in the parent, never in a Run child.
func NewHosts(tb testing.TB) *Hosts {
	tb.Helper()
	if ok, why := CanCreate(); !ok {
		tb.Skipf("netnstest: %s; this test multicasts between two network namespaces it creates (run as root)", why)
	}
	if InChild() {
		tb.Fatal("netnstest: NewHosts in a Run child")
	}
	id := os.Getpid() % 100000
	n := 1 + os.Getpid()%250
	h := &Hosts{
		A: fmt.Sprintf("meshd-a-%d", id), B: fmt.Sprintf("meshd-b-%d", id),
		IfA: fmt.Sprintf("mva%d", id), IfB: fmt.Sprintf("mvb%d", id),
		AddrA: fmt.Sprintf("10.231.%d.1", n), AddrB: fmt.Sprintf("10.231.%d.2", n),
		subnetByte: n,
	}
	tb.Cleanup(func() { h.remove(tb) })
	steps := [][]string{
		{"netns", "add", h.A},
		{"netns", "add", h.B},
		{"link", "add", h.IfA, "netns", h.A, "type", "veth", "peer", "name", h.IfB, "netns", h.B},
		{"-n", h.A, "addr", "add", h.AddrA + "/24", "dev", h.IfA},
		{"-n", h.B, "addr", "add", h.AddrB + "/24", "dev", h.IfB},
		{"-n", h.A, "link", "set", h.IfA, "up"},
		{"-n", h.B, "link", "set", h.IfB, "up"},
		{"-n", h.A, "link", "set", "lo", "up"},
		{"-n", h.B, "link", "set", "lo", "up"},
		{"-n", h.A, "route", "add", "224.0.0.0/4", "dev", h.IfA},
		{"-n", h.B, "route", "add", "224.0.0.0/4", "dev", h.IfB},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			tb.Fatal(err)
		}
	}
	return h
}

// Env describes the hosts to a Run child (see HostsFromEnv).
func (h *Hosts) Env() string {
	return "MESHD_NETNS_HOSTS=" + strings.Join([]string{h.A, h.B, h.IfA, h.IfB, h.AddrA, h.AddrB}, ",")
}

// HostsFromEnv returns the hosts the parent described with Env, or nil.
func HostsFromEnv() *Hosts {
	f := strings.Split(os.Getenv("MESHD_NETNS_HOSTS"), ",")
	if len(f) != 6 {
		return nil
	}
	return &Hosts{A: f[0], B: f[1], IfA: f[2], IfB: f[3], AddrA: f[4], AddrB: f[5]}
}

// Exec returns a shell script that runs bin inside namespace ns with the
// same pid (exec), so signals reach it directly. The script is removed
// when the test ends.
func Exec(tb testing.TB, ns, bin string) string {
	tb.Helper()
	path := fmt.Sprintf("%s/in-%s-%s", tb.TempDir(), ns, baseName(bin))
	script := "#!/bin/sh\nexec ip netns exec " + strconv.Quote(ns) + " " + strconv.Quote(bin) + " \"$@\"\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		tb.Fatal(err)
	}
	return path
}

func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

// remove kills what still runs in the namespaces (processes a crashed child
// left behind) and deletes them; the veth pair goes with them.
func (h *Hosts) remove(tb testing.TB) {
	for _, ns := range []string{h.A, h.B} {
		KillIn(ns)
	}
	for _, ns := range []string{h.A, h.B} {
		if err := ip("netns", "del", ns); err != nil {
			tb.Errorf("netnstest: cleanup: %v", err)
		}
	}
}
