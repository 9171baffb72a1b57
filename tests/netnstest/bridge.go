package netnstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Net is several named network namespaces ("hosts") joined by a Linux
// bridge that lives in a namespace of its own (never in the machine's root
// namespace): each host has lo and eth0 (a veth whose other end is on the
// bridge) with an IPv4 address in 10.233.N.0/24. Made by NewNet, removed
// when the test ends with every process still running in it. Faults: a
// host's link down (Partition), a qdisc on its link (Netem).
type Net struct {
	Bridge string // the bridge's namespace
	Hosts  map[string]*Host
	order  []*Host
}

// Host is one namespace of a Net.
type Host struct {
	Name string // as given to NewNet
	NS   string // namespace name (ip netns)
	Addr string // IPv4 address of its eth0
	peer string // the veth end on the bridge (in Net.Bridge)
	net  *Net
}

// NewNet makes a Net with the named hosts (root only: it skips tb
// otherwise, saying why).
func NewNet(tb testing.TB, names ...string) *Net {
	tb.Helper()
	if ok, why := CanCreate(); !ok {
		tb.Skipf("netnstest: %s; this test runs hosts as network namespaces it creates (run as root)", why)
	}
	if _, err := exec.LookPath("tc"); err != nil {
		tb.Skipf("netnstest: no tc(8) on PATH (Debian: iproute2)")
	}
	id := os.Getpid() % 100000
	n := 1 + os.Getpid()%250
	nt := &Net{Bridge: fmt.Sprintf("meshd-br-%d", id), Hosts: map[string]*Host{}}
	tb.Cleanup(func() { nt.remove(tb) })
	steps := [][]string{
		{"netns", "add", nt.Bridge},
		{"-n", nt.Bridge, "link", "add", "br0", "type", "bridge"},
		{"-n", nt.Bridge, "link", "set", "br0", "up"},
		{"-n", nt.Bridge, "link", "set", "lo", "up"},
	}
	for i, name := range names {
		h := &Host{Name: name, NS: fmt.Sprintf("meshd-%s-%d", name, id), Addr: fmt.Sprintf("10.233.%d.%d", n, i+1),
			peer: fmt.Sprintf("vb%d", i+1), net: nt}
		nt.Hosts[name] = h
		nt.order = append(nt.order, h)
		steps = append(steps,
			[]string{"netns", "add", h.NS},
			[]string{"-n", h.NS, "link", "add", "eth0", "type", "veth", "peer", "name", h.peer, "netns", nt.Bridge},
			[]string{"-n", h.NS, "addr", "add", h.Addr + "/24", "dev", "eth0"},
			[]string{"-n", h.NS, "link", "set", "eth0", "up"},
			[]string{"-n", h.NS, "link", "set", "lo", "up"},
			[]string{"-n", nt.Bridge, "link", "set", h.peer, "master", "br0"},
			[]string{"-n", nt.Bridge, "link", "set", h.peer, "up"},
		)
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			tb.Fatal(err)
		}
	}
	return nt
}

// Exec returns a script that runs bin inside the host (same pid: signals
// reach bin itself).
func (h *Host) Exec(tb testing.TB, bin string) string { return Exec(tb, h.NS, bin) }

// Partition cuts the host off the bridge (down: packets are dropped both
// ways, connections stay open) or joins it again.
func (h *Host) Partition(down bool) error {
	state := "up"
	if down {
		state = "down"
	}
	return ip("-n", h.net.Bridge, "link", "set", h.peer, state)
}

// Netem puts a netem qdisc with args (e.g. "delay", "100ms", "loss", "5%")
// on the host's link, both ways (eth0's egress and the bridge port's
// egress towards it); no args removes it.
func (h *Host) Netem(args ...string) error {
	for _, side := range [][2]string{{h.NS, "eth0"}, {h.net.Bridge, h.peer}} {
		if len(args) == 0 {
			out, err := exec.Command("tc", "-n", side[0], "qdisc", "del", "dev", side[1], "root").CombinedOutput()
			if err != nil && !strings.Contains(string(out), "No such file") && !strings.Contains(string(out), "Cannot delete qdisc with handle of zero") {
				return fmt.Errorf("netnstest: tc qdisc del: %w: %s", err, out)
			}
			continue
		}
		a := append([]string{"-n", side[0], "qdisc", "replace", "dev", side[1], "root", "netem"}, args...)
		if out, err := exec.Command("tc", a...).CombinedOutput(); err != nil {
			return fmt.Errorf("netnstest: tc %s: %w: %s", strings.Join(a, " "), err, out)
		}
	}
	return nil
}

// NetemAvailable reports whether tc can make a netem qdisc here (the
// kernel may lack sch_netem, as minimal VM kernels do), and why not.
func (nt *Net) NetemAvailable() (bool, string) {
	h := nt.order[0]
	out, err := exec.Command("tc", "-n", h.NS, "qdisc", "replace", "dev", "lo", "root", "netem", "delay", "1ms").CombinedOutput()
	if err != nil {
		return false, "tc netem: " + strings.TrimSpace(string(out)) + " (the kernel has no sch_netem)"
	}
	_ = exec.Command("tc", "-n", h.NS, "qdisc", "del", "dev", "lo", "root").Run()
	return true, ""
}

// DialContext connects from inside the host (see DialIn). For clients in
// the test process.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return DialIn(h.NS)(ctx, network, addr)
}

func (nt *Net) remove(tb testing.TB) {
	nss := []string{nt.Bridge}
	for _, h := range nt.order {
		nss = append(nss, h.NS)
	}
	for _, ns := range nss {
		KillIn(ns)
	}
	for _, ns := range nss {
		if err := ip("netns", "del", ns); err != nil {
			tb.Errorf("netnstest: cleanup: %v", err)
		}
	}
}
