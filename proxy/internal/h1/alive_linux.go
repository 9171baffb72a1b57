package h1

import (
	"net"
	"syscall"
)

// alive reports whether an idle connection still looks usable: no close
// and no unsolicited bytes from the server (one non-blocking peek).
func alive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = true
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EAGAIN || err == syscall.EINTR:
			ok = true
		default: // EOF (n == 0), bytes nobody asked for, or an error
			_ = n
			ok = false
		}
		return true
	})
	return ok && err == nil
}
