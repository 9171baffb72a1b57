package proxy

import (
	"bufio"
	"io"
	"testing"
	"time"
)

// TestSniffH2 feeds the sniffer byte by byte: an HTTP/1 request that
// shares the preface's first letter is told apart at its first differing
// byte, and a preface in pieces is recognized.
func TestSniffH2(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"PUT / HTTP/1.0\r\n\r\n", false},
		{h2Preface + "frames", true},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"PRI * HTTP/1.1\r\n", false},
	} {
		pr, pw := io.Pipe()
		go func() {
			for i := range len(tc.in) {
				if _, err := pw.Write([]byte{tc.in[i]}); err != nil {
					return
				}
			}
			_ = pw.Close()
		}()
		got := make(chan bool, 1)
		go func() {
			h2, err := sniffH2(bufio.NewReader(pr))
			got <- h2 && err == nil
		}()
		select {
		case h2 := <-got:
			if h2 != tc.want {
				t.Errorf("%q: h2=%v, want %v", tc.in, h2, tc.want)
			}
		case <-time.After(2 * time.Second):
			t.Errorf("%q: sniffer blocked", tc.in)
		}
		_ = pr.Close()
	}
}
