package netnstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/freeport"
)

// envKillInChild makes the test binary, started inside a namespace, call
// KillIn on it and say whether it lived through that.
const envKillInChild = "MESHD_NETNS_KILLIN_CHILD"

// envListenChild makes the test binary, started inside a namespace, serve
// "in-ns" to every connection on 127.0.0.1 at the port it names.
const envListenChild = "MESHD_NETNS_LISTEN_CHILD"

func init() {
	if ns := os.Getenv(envKillInChild); ns != "" {
		killed := KillIn(ns)
		fmt.Printf("survived, killed %v\n", killed)
		os.Exit(0)
	}
	if port := os.Getenv(envListenChild); port != "" {
		l, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("up")
		for {
			c, err := l.Accept()
			if err != nil {
				os.Exit(1)
			}
			_, _ = c.Write([]byte("in-ns"))
			c.Close()
		}
	}
}

// scratchNS makes a named namespace with lo up, removed (with what runs in
// it) when the test ends.
func scratchNS(t *testing.T) string {
	t.Helper()
	if ok, why := CanCreate(); !ok {
		t.Skipf("netnstest: %s (run as root)", why)
	}
	ns := fmt.Sprintf("meshd-scratch-%d", os.Getpid()%100000)
	if err := ip("netns", "add", ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		KillIn(ns)
		if err := ip("netns", "del", ns); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := ip("-n", ns, "link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	return ns
}

// TestKillInSparesItsCaller: a process that itself runs in the namespace
// (as the test process does once its main thread is left there) kills
// everything else in it and lives.
func TestKillInSparesItsCaller(t *testing.T) {
	ns := scratchNS(t)
	sleep := exec.Command("ip", "netns", "exec", ns, "sleep", "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sleep.Wait() }()
	t.Cleanup(func() { _ = sleep.Process.Kill() })
	// ip netns exec execs sleep: the pid is sleep's once it is in ns.
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Contains(pidsIn(ns), sleep.Process.Pid) {
		if time.Now().After(deadline) {
			t.Fatalf("sleep (pid %d) never showed up in %s", sleep.Process.Pid, ns)
		}
		time.Sleep(10 * time.Millisecond)
	}

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, self, "-test.run=^$")
	cmd.Env = append(os.Environ(), envKillInChild+"="+ns)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the process calling KillIn in %s: %v\n%s", ns, err, out)
	}
	want := fmt.Sprintf("survived, killed [%d]", sleep.Process.Pid)
	if !strings.Contains(string(out), want) {
		t.Fatalf("KillIn's caller printed %q, want %q", out, want)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("sleep ended with %v, want killed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("sleep still runs after KillIn")
	}
}

// TestDialInReturnsItsThread: DialIn reaches what listens inside the
// namespace, and no thread of the test process stays there afterwards.
func TestDialInReturnsItsThread(t *testing.T) {
	ns := scratchNS(t)
	port, err := freeport.Take() // free here too: the check below needs that
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ln := exec.Command("ip", "netns", "exec", ns, self, "-test.run=^$")
	ln.Env = append(os.Environ(), envListenChild+"="+strconv.Itoa(port))
	stdout, _ := ln.StdoutPipe()
	if err := ln.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Process.Kill(); _ = ln.Wait() })
	buf := make([]byte, 3)
	if _, err := stdout.Read(buf); err != nil || string(buf) != "up\n" {
		t.Fatalf("listener in %s: %q %v", ns, buf, err)
	}

	dial := DialIn(ns)
	for i := range 50 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := dial(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(port))
		cancel()
		if err != nil {
			t.Fatalf("dial %d into %s: %v", i, ns, err)
		}
		b := make([]byte, 5)
		_, err = c.Read(b)
		c.Close()
		if err != nil || string(b) != "in-ns" {
			t.Fatalf("dial %d: read %q %v, want the listener in the namespace", i, b, err)
		}
	}
	// In the test process's own namespace nothing listens there.
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second); err == nil {
		c.Close()
		t.Fatal("the port answers outside the namespace too: the test proves nothing")
	}
	nsLink := inodeOf(t, "/run/netns/"+ns)
	tasks, _ := filepath.Glob("/proc/self/task/*/ns/net")
	for _, task := range tasks {
		if l, _ := os.Readlink(task); l == nsLink {
			t.Errorf("thread %s is still in %s after DialIn", task, ns)
		}
	}
	if slices.Contains(pidsIn(ns), os.Getpid()) {
		t.Error("the test process shows up in the namespace after DialIn")
	}
}

func pidsIn(ns string) []int {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids
}

// inodeOf renders a namespace file's inode the way /proc/*/ns/net links
// name it ("net:[inode]").
func inodeOf(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("stat", "-L", "-c", "%i", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	return "net:[" + strings.TrimSpace(string(out)) + "]"
}
