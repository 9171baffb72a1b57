package proxy

import (
	"bufio"
	"net"
)

// bufferedListener gives every accepted connection a read buffer. The
// HTTP/2 server reads a cleartext (h2c) connection straight from the socket,
// two read syscalls per frame (9-byte header, then payload); a gRPC call is
// 4-5 frames in. Behind a buffer a burst of frames costs one read. TLS
// connections need none of this: crypto/tls reads whole records.
type bufferedListener struct{ net.Listener }

func (l bufferedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &bufferedConn{Conn: c, r: newConnReader(c)}, nil
}

// 4 KiB holds a burst of small frames; a larger frame's payload is read
// straight into the framer's buffer (bufio bypasses its own for big reads).
func newConnReader(c net.Conn) *bufio.Reader { return bufio.NewReaderSize(c, 4<<10) }

// bufferedConn is a net.Conn whose reads go through r.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite half-closes a TCP connection (net/http uses it, when
// available, to close a connection gracefully).
func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
