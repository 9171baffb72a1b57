package appchannel

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// TestReachable: a listening app is reachable; a closed port is not, with
// an error naming the app's address; a cancelled context is an error.
func TestReachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	c, err := New(Config{Port: port})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Reachable(ctx); err != nil {
		t.Fatalf("Reachable with the app listening: %v", err)
	}
	l.Close()
	err = c.Reachable(ctx)
	if err == nil {
		t.Fatal("Reachable with the app gone: nil error")
	}
	if want := c.Addr(); !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name the app at %s", err, want)
	}
	done, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := c.Reachable(done); err == nil {
		t.Fatal("Reachable with a cancelled context: nil error")
	}
}
