package netnstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DialIn returns a dial func that makes its sockets inside the named
// network namespace ns (a socket stays in the namespace it was made in):
// for clients in the test process that must see a namespace's addresses.
//
// The socket is made on an OS thread switched into ns and back. If the
// thread cannot go back it stays locked and ends with its goroutine; when
// that thread is the process's main one, Go parks it for good instead, and
// the process then shows up in ns (/proc/PID/ns/net is the main thread's):
// KillIn spares the calling process for that reason.
func DialIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type res struct {
			c   net.Conn
			err error
		}
		ch := make(chan res, 1)
		go func() {
			runtime.LockOSThread()
			orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
			if err != nil {
				runtime.UnlockOSThread()
				ch <- res{nil, fmt.Errorf("netnstest: %w", err)}
				return
			}
			defer orig.Close()
			f, err := os.Open("/run/netns/" + ns)
			if err != nil {
				runtime.UnlockOSThread()
				ch <- res{nil, fmt.Errorf("netnstest: %w", err)}
				return
			}
			err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
			f.Close()
			if err != nil {
				runtime.UnlockOSThread()
				ch <- res{nil, fmt.Errorf("netnstest: setns %s: %w", ns, err)}
				return
			}
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			}
			ch <- res{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// KillIn SIGKILLs every process that runs in the named network namespace
// ns except the calling one, and returns the pids it signalled. Stopped
// processes are continued first so that they die now.
func KillIn(ns string) []int {
	list := exec.Command("ip", "netns", "pids", ns)
	out, _ := list.Output()
	var killed []int
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		// Not the caller, nor the ip that listed (it runs where the
		// caller does).
		if err != nil || pid <= 1 || pid == os.Getpid() || (list.Process != nil && pid == list.Process.Pid) {
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGCONT)
		_ = syscall.Kill(pid, syscall.SIGKILL)
		killed = append(killed, pid)
	}
	if len(killed) > 0 {
		time.Sleep(50 * time.Millisecond)
	}
	return killed
}
