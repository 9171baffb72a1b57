package netnstest

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// EnvChild marks the re-executed child; its value is the name of the test it
// runs.
const EnvChild = "MESHD_NETNS_CHILD"

// InRootNamespace reports whether this process shares its network namespace
// with PID 1 (the machine's root namespace, or the container's).
func InRootNamespace() (bool, error) {
	var self, init syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/net", &self); err != nil {
		return false, fmt.Errorf("netnstest: %w", err)
	}
	if err := syscall.Stat("/proc/1/ns/net", &init); err != nil {
		return false, fmt.Errorf("netnstest: %w", err)
	}
	return self.Ino == init.Ino && self.Dev == init.Dev, nil
}

// Guard fails tb at once, loudly, unless the process runs in a private
// network namespace. Call it before anything that multicasts.
func Guard(tb testing.TB) {
	tb.Helper()
	root, err := InRootNamespace()
	if err != nil {
		tb.Fatalf("netnstest: cannot tell the network namespace (%v): refusing to multicast", err)
	}
	if root {
		tb.Fatalf("netnstest: SAFETY: this process is in the machine's root network namespace; " +
			"multicast would leave through the real network card. Refusing to run.")
	}
}

// InChild reports whether this process is a child started by Run.
func InChild() bool { return os.Getenv(EnvChild) != "" }

// Opts tune Run.
type Opts struct {
	// Netns is a named namespace (ip netns) to run the child in; "" makes a
	// fresh anonymous one with `unshare -n`.
	Netns string
	// NoLoopbackMulticast leaves lo without the MULTICAST flag and route
	// (to test what happens where multicast is not available).
	NoLoopbackMulticast bool
	// Env is added to the child's environment (KEY=VALUE).
	Env []string
}

// CanCreate reports whether this process can create network namespaces,
// and why not.
func CanCreate() (bool, string) {
	if os.Geteuid() != 0 {
		return false, "not root: cannot create network namespaces"
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		return false, "no unshare(1) on PATH"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return false, "no ip(8) on PATH"
	}
	return true, ""
}

// Run makes the calling test (or benchmark) run inside a private network
// namespace. In the parent it runs the test binary again for tb alone in a
// new namespace, reports its output, fails tb if the child failed, and
// returns false. In the child it checks the namespace (Guard), sets up lo,
// and returns true: the caller then runs its scenario.
func Run(tb testing.TB, o Opts) bool {
	tb.Helper()
	if name := os.Getenv(EnvChild); name != "" {
		if name != tb.Name() {
			// A test the child was not started for (should not happen with
			// the -test.run pattern); never multicast from it.
			tb.Skipf("netnstest: child for %s does not run %s", name, tb.Name())
		}
		Guard(tb)
		if !o.NoLoopbackMulticast {
			if err := SetupLoopback(); err != nil {
				tb.Fatal(err)
			}
		} else if err := ip("link", "set", "lo", "up"); err != nil {
			tb.Fatal(err)
		}
		return true
	}
	if ok, why := CanCreate(); !ok {
		tb.Skipf("netnstest: %s; this test multicasts and runs only inside a network namespace it creates (run as root)", why)
	}
	args := []string{"-test.v=true", "-test.timeout=0"}
	pattern := testPattern(tb.Name())
	if _, isBench := tb.(*testing.B); isBench {
		args = append(args, "-test.run=^$", "-test.bench="+pattern, "-test.benchmem")
		for _, f := range []string{"test.benchtime", "test.count", "test.cpu"} {
			if fl := flag.Lookup(f); fl != nil {
				args = append(args, "-"+f+"="+fl.Value.String())
			}
		}
	} else {
		args = append(args, "-test.run="+pattern)
	}
	var cmd *exec.Cmd
	if o.Netns != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", o.Netns, os.Args[0]}, args...)...)
	} else {
		cmd = exec.Command("unshare", append([]string{"-n", "--", os.Args[0]}, args...)...)
	}
	cmd.Env = append(append(os.Environ(), EnvChild+"="+tb.Name()), o.Env...)
	var out bytes.Buffer
	if _, isBench := tb.(*testing.B); isBench {
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	} else {
		cmd.Stdout, cmd.Stderr = &out, &out
	}
	err := cmd.Run()
	if s := out.String(); s != "" && (err != nil || testing.Verbose()) {
		tb.Logf("---- child in network namespace ----\n%s", s)
	}
	if err != nil {
		tb.Fatalf("netnstest: %s in a network namespace: %v", tb.Name(), err)
	}
	if _, isBench := tb.(*testing.B); !isBench && strings.Contains(out.String(), "--- SKIP: "+tb.Name()) {
		tb.Fatalf("netnstest: the child skipped %s", tb.Name())
	}
	if _, isBench := tb.(*testing.B); !isBench && !strings.Contains(out.String(), "--- PASS: "+tb.Name()) {
		tb.Fatalf("netnstest: the child did not report %s as passed", tb.Name())
	}
	if b, isBench := tb.(*testing.B); isBench {
		b.SkipNow() // the numbers are the child's, printed above
	}
	return false
}

func testPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// SetupLoopback brings lo up with the MULTICAST flag and a 224.0.0.0/4
// route (idempotent). It refuses to run in the root namespace.
func SetupLoopback() error {
	if root, err := InRootNamespace(); err != nil || root {
		return fmt.Errorf("netnstest: SetupLoopback refused outside a private network namespace (err %v)", err)
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "set", "lo", "multicast", "on"},
		{"route", "replace", "224.0.0.0/4", "dev", "lo"},
	} {
		if err := ip(args...); err != nil {
			return err
		}
	}
	return nil
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("netnstest: ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
