package proxy

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// The sidecar's HTTP/2 servers advertise 16 KiB frames (h2FrameSize), not
// net/http's 1 MiB default: a client sizes its per-stream body buffer by
// the peer's SETTINGS_MAX_FRAME_SIZE (512 KiB per streamed body at 1 MiB).
func TestHTTP2MaxFrameSizeAdvertised(t *testing.T) {
	ca := newCA(t, "cluster.local")
	s := startSidecar(t, ca, Config{Identity: mustIdentity(t, "frontend"), Resolver: newResolver()})
	c, err := net.Dial("tcp", s.grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	// Client preface and an empty SETTINGS frame.
	if _, err := c.Write(append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)); err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 9)
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatal(err)
	}
	if hdr[3] != 4 || hdr[4]&1 != 0 {
		t.Fatalf("first server frame is type %d flags %d, want SETTINGS", hdr[3], hdr[4])
	}
	payload := make([]byte, int(hdr[0])<<16|int(hdr[1])<<8|int(hdr[2]))
	if _, err := io.ReadFull(c, payload); err != nil {
		t.Fatal(err)
	}
	got := uint32(16 << 10) // the protocol default when the setting is absent
	for p := payload; len(p) >= 6; p = p[6:] {
		if binary.BigEndian.Uint16(p) == 5 { // SETTINGS_MAX_FRAME_SIZE
			got = binary.BigEndian.Uint32(p[2:])
		}
	}
	if got != h2FrameSize {
		t.Fatalf("SETTINGS_MAX_FRAME_SIZE %d, want %d", got, h2FrameSize)
	}
}
