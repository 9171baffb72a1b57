package proxy

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// TestH2ServerChoice: Config.NetHTTPH2Server picks the server of every
// HTTP/2 port, told apart by the SETTINGS it opens with: net/http's names
// SETTINGS_MAX_FRAME_SIZE (5) and SETTINGS_HEADER_TABLE_SIZE (1),
// proxy/internal/h2's leaves both at the protocol's defaults.
func TestH2ServerChoice(t *testing.T) {
	t.Setenv("MESHD_H2_SERVER", "") // startSidecar's override for whole-package runs
	ca := newCA(t, "cluster.local")
	for _, netHTTP := range []bool{false, true} {
		s := startSidecar(t, ca, Config{Identity: mustIdentity(t, "frontend"), Resolver: newResolver(), Insecure: true, NetHTTPH2Server: netHTTP})
		if t.Failed() {
			return
		}
		for port, addr := range map[string]string{"grpc": s.grpcAddr, "internal (h2c)": s.internal, "http (h2c)": s.httpURL[len("http://"):]} {
			ids := serverSettings(t, addr)
			_, frame := ids[5]
			_, table := ids[1]
			if frame != netHTTP || table != netHTTP {
				t.Errorf("NetHTTPH2Server=%v, %s port: settings %v; want net/http's only when set", netHTTP, port, ids)
			}
		}
	}
}

// serverSettings reads the SETTINGS an HTTP/2 server opens an h2c
// connection with.
func serverSettings(t *testing.T, addr string) map[uint16]uint32 {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(append([]byte(h2Preface), 0, 0, 0, 4, 0, 0, 0, 0, 0)); err != nil {
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
	ids := map[uint16]uint32{}
	for p := payload; len(p) >= 6; p = p[6:] {
		ids[binary.BigEndian.Uint16(p)] = binary.BigEndian.Uint32(p[2:])
	}
	return ids
}
