package identity_test

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// socketsOf counts the sockets process pid holds open.
func socketsOf(t *testing.T, pid int) int {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Skipf("cannot count sentry's sockets: %v", err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// TestHandshakeFlood (item 4): connections that never finish their TLS
// handshake (silent ones, and ones that send half a ClientHello) are closed
// by sentry within --handshake-timeout; sentry never holds more than
// --max-pending-handshakes of them; and a genuine client gets a certificate
// while the flood is held.
func TestHandshakeFlood(t *testing.T) {
	const (
		timeout = 3 * time.Second
		limit   = 16
		flood   = 4 * limit
	)
	dir := filepath.Join(t.TempDir(), "sentry")
	p := startSentry(t, dir, "--handshake-timeout", timeout.String(), "--max-pending-handshakes", strconv.Itoa(limit))
	roots := p.bundle(t)
	tok := p.token(t, "orders", "default")
	pid := p.cmd.Process.Pid
	baseline := socketsOf(t, pid)

	// The first bytes of a TLS record carrying a ClientHello, cut short.
	halfHello := []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}
	type held struct {
		opened, closed time.Time
	}
	conns := make([]held, flood)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range flood {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		defer c.Close()
		conns[i].opened = time.Now()
		if i%2 == 1 {
			if _, err := c.Write(halfHello); err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(timeout + 20*time.Second))
			buf := make([]byte, 512)
			for {
				if _, err := c.Read(buf); err != nil {
					break // closed by sentry (or our deadline)
				}
			}
			mu.Lock()
			conns[i].closed = time.Now()
			mu.Unlock()
		}()
	}
	floodDone := time.Now()

	// Sentry holds at most limit of them (plus what it held before).
	time.Sleep(300 * time.Millisecond)
	if n := socketsOf(t, pid); n > baseline+limit {
		t.Errorf("sentry holds %d sockets during the flood of %d; at most %d+%d allowed", n, flood, baseline, limit)
	}
	mu.Lock()
	open := 0
	for _, c := range conns {
		if c.closed.IsZero() {
			open++
		}
	}
	mu.Unlock()
	if open > limit {
		t.Errorf("%d flood connections still open 300ms after the flood, want <= %d", open, limit)
	}

	// A genuine client gets its certificate before the handshake timeout
	// would have freed any slot.
	if _, err := fetchWith(t, p, roots, "orders", tok); err != nil {
		t.Fatalf("genuine client during the flood: %v", err)
	}
	if got := time.Since(floodDone); got >= timeout {
		t.Fatalf("the genuine client needed %s, not less than the handshake timeout %s", got, timeout)
	}

	wg.Wait()
	var worst time.Duration
	over := 0
	for _, c := range conns {
		held := c.closed.Sub(c.opened)
		if held > timeout+2*time.Second {
			over++
		}
		worst = max(worst, held)
	}
	if over > 0 {
		t.Errorf("%d of %d flood connections held longer than the handshake timeout %s (+2s); longest %s",
			over, flood, timeout, worst.Round(time.Millisecond))
	}
	waitFor(t, 5*time.Second, "sentry's sockets back to the baseline", func() bool {
		return socketsOf(t, pid) <= baseline+1
	})
	t.Logf("%d silent/half-hello connections, cap %d: longest held %s", flood, limit, worst.Round(time.Millisecond))
}
