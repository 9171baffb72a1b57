package proxy

import (
	"bytes"
	"io"
	"net"
	"testing"
)

type countingConn struct {
	net.Conn
	reads int
}

func (c *countingConn) Read(p []byte) (int, error) { c.reads++; return c.Conn.Read(p) }

// TestBufferedConn: frame-sized reads of a burst cost one socket read, the
// bytes arrive intact, and CloseWrite reaches the TCP connection.
func TestBufferedConn(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	burst := bytes.Repeat([]byte("0123456789"), 500) // 5,000 bytes
	go func() {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Write(burst)
		_, _ = io.Copy(io.Discard, c) // until the server half-closes
	}()
	raw, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	cc := &countingConn{Conn: raw}
	c := &bufferedConn{Conn: cc, r: nil}
	c.r = newConnReader(cc)
	got := make([]byte, 0, len(burst))
	buf := make([]byte, 9)
	for len(got) < len(burst) {
		n, err := c.Read(buf[:min(9, len(burst)-len(got))])
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, burst) {
		t.Fatal("bytes changed on the way")
	}
	if cc.reads > 3 { // the burst may arrive in more than one segment
		t.Errorf("%d socket reads for %d 9-byte reads of one burst", cc.reads, (len(burst)+8)/9)
	}
	if err := c.CloseWrite(); err != nil {
		t.Errorf("CloseWrite: %v", err)
	}
	c.Close()
}
