package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestErrorWithUnreadBodyKeepsConnection: an error answered before the
// request body was sent (unknown app, refused dial) must leave the
// client's HTTP/1.1 connection usable for its next request.
func TestErrorWithUnreadBodyKeepsConnection(t *testing.T) {
	e := newEnv(t, nil)
	dead := listen(t)
	deadAddr := dead.Addr().String()
	dead.Close()
	e.res.set("deadapp", deadAddr)
	c, err := net.Dial("tcp", strings.TrimPrefix(e.caller.httpURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for i, c2 := range []struct {
		app    string
		status int
	}{{"nobody", 503}, {"nobody", 503}, {"deadapp", 502}, {"orders", 200}} {
		req := "POST /v1.0/invoke/" + c2.app + "/method/x HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n100 EUR"
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d (%s) on the kept-alive connection: %v", i, c2.app, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c2.status {
			t.Fatalf("request %d (%s): %d, want %d", i, c2.app, resp.StatusCode, c2.status)
		}
	}
}
