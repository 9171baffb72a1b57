package proxy

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// TestCallTimeout: the smallest of the sidecar's timeout, Meshd-Timeout and
// (gRPC only) grpc-timeout bounds a call; values that do not parse are
// ignored, and a grpc-timeout beyond time.Duration's range is no bound at
// all rather than a negative one that fails every call at once.
func TestCallTimeout(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    time.Duration
		header http.Header
		grpc   bool
		want   time.Duration
	}{
		{"none", 0, http.Header{}, true, 0},
		{"sidecar", 5 * time.Second, http.Header{}, false, 5 * time.Second},
		{"meshd-timeout below", 5 * time.Second, http.Header{"Meshd-Timeout": {"250ms"}}, false, 250 * time.Millisecond},
		{"meshd-timeout above", time.Second, http.Header{"Meshd-Timeout": {"3s"}}, false, time.Second},
		{"grpc-timeout", 0, http.Header{"Grpc-Timeout": {"100m"}}, true, 100 * time.Millisecond},
		{"grpc-timeout on plain HTTP", 0, http.Header{"Grpc-Timeout": {"100m"}}, false, 0},
		{"grpc-timeout twice", 0, http.Header{"Grpc-Timeout": {"100m", "1m"}}, true, 0},
		{"grpc-timeout malformed", 2 * time.Second, http.Header{"Grpc-Timeout": {"+1S"}}, true, 2 * time.Second},
		{"grpc-timeout huge", 0, http.Header{"Grpc-Timeout": {"99999999H"}}, true, 1<<63 - 1},
		{"grpc-timeout huge under a sidecar timeout", 2 * time.Second, http.Header{"Grpc-Timeout": {"99999999H"}}, true, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Proxy{cfg: Config{Timeout: tc.cfg}}
			if got := p.callTimeout(&http.Request{Header: tc.header}, tc.grpc); got != tc.want {
				t.Fatalf("callTimeout = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestDeadlinePassed: by the clock, not by the context's timer.
func TestDeadlinePassed(t *testing.T) {
	if deadlinePassed(context.Background()) {
		t.Error("no deadline: passed")
	}
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(time.Hour))
	defer cancel()
	if deadlinePassed(ctx) {
		t.Error("an hour ahead: passed")
	}
	// A deadline in the past whose context is not done yet: a parent that
	// never ends, and a deadline that has just gone by.
	past := fakeDeadline{context.Background(), time.Now().Add(-time.Millisecond)}
	if !deadlinePassed(past) {
		t.Error("a millisecond ago: not passed")
	}
}

// fakeDeadline has a deadline its Done never shows: a timer yet to fire.
type fakeDeadline struct {
	context.Context
	dl time.Time
}

func (f fakeDeadline) Deadline() (time.Time, bool) { return f.dl, true }
