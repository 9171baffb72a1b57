package h1

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"testing"
)

// BenchmarkReadRequest parses the bench harness's request head (the proxy's
// shape: a few fields and a traceparent), into a fresh header map and into
// a connection's reused one (Server.ReuseHeader).
func BenchmarkReadRequest(b *testing.B) {
	head := []byte("POST /v1.0/invoke/orders/method/api/orders HTTP/1.1\r\nHost: bench\r\nUser-Agent: fortio.org/fortio-1.68.2\r\n" +
		"Content-Type: application/octet-stream\r\nContent-Length: 0\r\nTraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n")
	for _, reuse := range []bool{false, true} {
		name := "fresh"
		if reuse {
			name = "reuse"
		}
		b.Run(name, func(b *testing.B) {
			rd := bytes.NewReader(head)
			br := bufio.NewReaderSize(rd, 4096)
			var hb *headerBuf
			if reuse {
				hb = &headerBuf{}
			}
			var dst http.Request
			b.ReportAllocs()
			for b.Loop() {
				rd.Reset(head)
				br.Reset(rd)
				if _, _, err := readRequest(context.Background(), br, 8192, -1, &dst, hb); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
