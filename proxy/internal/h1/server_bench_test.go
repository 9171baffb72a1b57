package h1

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkServer runs keep-alive POSTs of 1 KiB (the bench harness's
// shape) against this package's Server and, side by side, net/http's
// server, with the same handler and a raw client on loopback. It reports
// the server's share of allocations per request (the client does none).
// h1-reuse is this package's Server with ReuseHeader.
func BenchmarkServer(b *testing.B) {
	body := strings.Repeat("x", 1024)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 2048)
		n, _ := io.ReadFull(r.Body, buf[:r.ContentLength])
		w.Header()["Content-Type"] = []string{"application/octet-stream"}
		w.Header()["Content-Length"] = []string{"1024"}
		_, _ = w.Write(buf[:n])
	})
	req := []byte("POST /echo HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\nContent-Length: 1024\r\nTraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n" + body)
	for _, impl := range []string{"h1", "h1-reuse", "nethttp"} {
		b.Run(impl, func(b *testing.B) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			if impl != "nethttp" {
				s := &Server{Handler: handler, ReuseHeader: impl == "h1-reuse"}
				defer s.Close()
				go func() {
					for {
						c, err := l.Accept()
						if err != nil {
							return
						}
						go s.ServeConn(c, nil)
					}
				}()
			} else {
				s := &http.Server{Handler: handler}
				defer s.Close()
				go func() { _ = s.Serve(l) }()
			}
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReaderSize(c, 4096)
			readAnswer := func() {
				// Head up to the blank line, then the 1 KiB body.
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						b.Fatal(err)
					}
					if len(line) <= 2 {
						break
					}
				}
				if _, err := br.Discard(1024); err != nil {
					b.Fatal(err)
				}
			}
			_, _ = c.Write(req)
			readAnswer()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				readAnswer()
			}
		})
	}
}
