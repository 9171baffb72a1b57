package h1

import (
	"crypto/tls"
	"net"
	"os"
	"syscall"
)

// waitFirst is whether Transport exchanges wait for the answer before
// reading it (see awaiter). MESHD_H1_WAIT_FIRST=off turns it off, for A/B
// measurements.
var waitFirst = os.Getenv("MESHD_H1_WAIT_FIRST") != "off"

// awaiter writes a request and then waits for the connection to become
// readable before the answer is read, saving a read syscall per exchange.
//
// Go's reads try the syscall first and wait for the poller only when it
// fails with EAGAIN; right after a request is written the answer is never
// there yet, so every exchange pays a read that finds nothing. Waiting
// first is unsafe in general: the wait begins by resetting the poller's
// record of readiness, so an answer whose edge came before the wait began
// would be forgotten. Here the reset happens before the request is written
// (the write runs inside syscall.RawConn.Read's first callback, which the
// runtime calls after arming the read), so any answer's edge comes after
// it. Readiness recorded before the write is stale by construction: the
// connection was idle and clean (no buffered bytes; the pool checks a
// connection idle for long with a peek), and a close or reset that came
// while it was idle is followed by another edge (the reset answering the
// write). A spurious wake-up costs nothing: the read that follows waits
// again as usual.
type awaiter struct {
	rc    syscall.RawConn
	nc    net.Conn // written to (TLS over rc's connection, or the same)
	head  []byte
	wrote bool
	err   error
	step  func(uintptr) bool // a.stepFn, bound once
}

// newAwaiter returns the awaiter of a connection nc over raw (its TCP
// connection), or nil where waiting first is off or not possible: no
// syscall.Conn, or a TLS handshake not done yet (Write would read).
func newAwaiter(nc, raw net.Conn) *awaiter {
	if !waitFirst {
		return nil
	}
	if tc, ok := nc.(*tls.Conn); ok && !tc.ConnectionState().HandshakeComplete {
		return nil
	}
	sc, ok := raw.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	a := &awaiter{rc: rc, nc: nc}
	a.step = a.stepFn
	return a
}

// stepFn is the RawConn.Read callback: the first call writes the request
// (false: now wait for readability unless the write failed), the next
// one, after the wait, ends it.
func (a *awaiter) stepFn(uintptr) bool {
	if a.wrote {
		return true
	}
	a.wrote = true
	_, a.err = a.nc.Write(a.head)
	return a.err != nil
}

// writeAndAwait writes head and returns once the connection is readable
// (or closed). It returns the write's error; a failed wait (the connection
// closed under it: a cancel, Keepalive) is left to the read that follows,
// which sees the close as it would have without the wait.
func (a *awaiter) writeAndAwait(head []byte) error {
	a.head, a.wrote, a.err = head, false, nil
	rerr := a.rc.Read(a.step)
	err := a.err
	if !a.wrote { // the read could not start (closed): write as usual
		_, err = a.nc.Write(head)
	}
	_ = rerr
	a.head, a.err = nil, nil
	return err
}
