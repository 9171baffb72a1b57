package netnstest

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// What a kernel without sch_netem still offers to make a link bad, for the
// fault rows netem would give: random loss with nftables (numgen), and a
// slow link with a tbf qdisc (a rate limit: delay grows with the queue, it
// is not a fixed delay; no built-in qdisc but netem delays every packet).

// lossTable is the nftables table Loss makes in a host's namespace.
const lossTable = "netnstest_loss"

// Loss drops percent % of the packets on the host's eth0, both ways (an
// nftables table in the host's namespace: `numgen random mod 100 < p drop`
// on input and output, eth0 only, so the host's own loopback is spared);
// 0 removes it. It needs nft(8).
func (h *Host) Loss(percent int) error {
	if percent < 0 || percent > 100 {
		return fmt.Errorf("netnstest: loss %d%%: want 0..100", percent)
	}
	_ = exec.Command("ip", "netns", "exec", h.NS, "nft", "delete", "table", "inet", lossTable).Run() // none yet: fine
	if percent == 0 {
		return nil
	}
	p := strconv.Itoa(percent)
	sample := "numgen random mod 100 < " + p + " " // 0..99 below p
	if percent == 100 {
		sample = ""
	}
	script := "table inet " + lossTable + " {\n" +
		" chain in { type filter hook input priority 0; iifname \"eth0\" " + sample + "drop; }\n" +
		" chain out { type filter hook output priority 0; oifname \"eth0\" " + sample + "drop; }\n" +
		"}\n"
	cmd := exec.Command("ip", "netns", "exec", h.NS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("netnstest: nft loss %s%% in %s: %w: %s", p, h.NS, err, out)
	}
	return nil
}

// LossAvailable reports whether Loss can work here (nft(8) and the
// kernel's nf_tables with numgen), and why not.
func (nt *Net) LossAvailable() (bool, string) {
	if _, err := exec.LookPath("nft"); err != nil {
		return false, "no nft(8) on PATH (Debian: nftables)"
	}
	h := nt.order[0]
	if err := h.Loss(1); err != nil {
		return false, err.Error()
	}
	_ = h.Loss(0)
	return true, ""
}

// Rate limits the host's link to rate (tc syntax: "2mbit"), both ways, with
// a tbf qdisc holding at most latency ("100ms") of queue before it drops;
// an empty rate removes it.
func (h *Host) Rate(rate, latency string) error {
	for _, side := range [][2]string{{h.NS, "eth0"}, {h.net.Bridge, h.peer}} {
		if rate == "" {
			out, err := exec.Command("tc", "-n", side[0], "qdisc", "del", "dev", side[1], "root").CombinedOutput()
			if err != nil && !strings.Contains(string(out), "No such file") && !strings.Contains(string(out), "Cannot delete qdisc with handle of zero") {
				return fmt.Errorf("netnstest: tc qdisc del: %w: %s", err, out)
			}
			continue
		}
		a := []string{"-n", side[0], "qdisc", "replace", "dev", side[1], "root", "tbf", "rate", rate, "burst", "16kb", "latency", latency}
		if out, err := exec.Command("tc", a...).CombinedOutput(); err != nil {
			return fmt.Errorf("netnstest: tc %s: %w: %s", strings.Join(a, " "), err, out)
		}
	}
	return nil
}
