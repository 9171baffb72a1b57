package netnstest

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// EnvChild marks the re-executed child; its value is the name of the test it
// runs.
const EnvChild = "MESHD_NETNS_CHILD"

// EnvParentNetns carries the parent's network namespace ("net:[inode]")
// to the child, which must be elsewhere.
const EnvParentNetns = "MESHD_NETNS_PARENT"

func selfNetns() (string, error) {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return "", fmt.Errorf("netnstest: %w", err)
	}
	if !strings.HasPrefix(self, "net:[") {
		return "", fmt.Errorf("netnstest: unexpected namespace link %q", self)
	}
	return self, nil
}

// InRootNamespace reports whether this process shares its network namespace
// with PID 1 (compared by the inode in /proc/*/ns/net), or with the parent
// that started it through Run. Reading /proc/1/ns/net needs ptrace access
// to PID 1, which a container may deny: then the comparison with the parent
// and the interface check of Guard decide.
func InRootNamespace() (bool, error) {
	self, err := selfNetns()
	if err != nil {
		return false, err
	}
	if init, err := os.Readlink("/proc/1/ns/net"); err == nil && init == self {
		return true, nil
	}
	if parent := os.Getenv(EnvParentNetns); parent != "" && parent == self {
		return true, nil
	}
	return false, nil
}

// Guard fails tb at once, loudly, unless the process runs in a private
// network namespace: not the namespace of PID 1 or of the parent, and with
// no interface but lo and the veth ends NewHosts made (so multicast cannot
// leave through a real network card). Call it before anything that
// multicasts.
func Guard(tb testing.TB) {
	tb.Helper()
	if err := check(); err != nil {
		tb.Fatalf("netnstest: SAFETY: %v; refusing to multicast", err)
	}
}

func check() error {
	root, err := InRootNamespace()
	if err != nil {
		return fmt.Errorf("cannot tell the network namespace: %w", err)
	}
	if root {
		return errors.New("this process is in the machine's root network namespace; multicast would leave through the real network card")
	}
	if os.Getenv(EnvChild) == "" {
		return errors.New("not a child started by netnstest.Run")
	}
	allowed := map[string]bool{"lo": true}
	if h := HostsFromEnv(); h != nil {
		allowed[h.IfA], allowed[h.IfB] = true, true
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	for _, ifi := range ifs {
		if !allowed[ifi.Name] {
			return fmt.Errorf("interface %s exists in this namespace (only lo and the test's veth pair may)", ifi.Name)
		}
	}
	return nil
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
	parent, err := selfNetns()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Env = append(append(os.Environ(), EnvChild+"="+tb.Name(), EnvParentNetns+"="+parent), o.Env...)
	var out bytes.Buffer
	if _, isBench := tb.(*testing.B); isBench {
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	} else {
		cmd.Stdout, cmd.Stderr = &out, &out
	}
	err = cmd.Run()
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
	if err := check(); err != nil {
		return fmt.Errorf("netnstest: SAFETY: SetupLoopback refused: %w", err)
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
