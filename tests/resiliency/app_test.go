package resiliency_test

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// testApp is an app served from the test process. It counts the attempts
// that reach it per key (the last path segment) and fails, hangs or answers
// as the path says:
//
//	/fail/{n}/{key}[?status=S]  S (default 500) for the first n attempts, then 200
//	/status/{code}/{key}        always code
//	/hang/{key}                 waits until the request is cancelled (max 30s)
//	/toggle/{key}[?sleep=ms]    500 while SetFailing(key, true), else 200
//	/instance/{key}             500 if the app was made with failAll, else 200
type testApp struct {
	name    string
	failAll bool
	port    int

	mu        sync.Mutex
	attempts  map[string]int
	bodies    map[string][]string
	timeouts  map[string][]string // Meshd-Timeout seen
	failing   map[string]bool
	cancelled chan string
}

func startTestApp(t *testing.T, name string, failAll bool) *testApp {
	t.Helper()
	a := &testApp{name: name, failAll: failAll, attempts: map[string]int{}, bodies: map[string][]string{},
		timeouts: map[string][]string{}, failing: map[string]bool{}, cancelled: make(chan string, 16)}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.port = l.Addr().(*net.TCPAddr).Port
	srv := &http.Server{Handler: a, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return a
}

func (a *testApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	key := parts[len(parts)-1]
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	a.attempts[key]++
	n := a.attempts[key]
	a.bodies[key] = append(a.bodies[key], string(body))
	if v := r.Header.Get("Meshd-Timeout"); v != "" {
		a.timeouts[key] = append(a.timeouts[key], v)
	}
	failing := a.failing[key]
	a.mu.Unlock()
	w.Header().Set("X-Instance", a.name)
	switch parts[0] {
	case "fail":
		limit, _ := strconv.Atoi(parts[1])
		status := 500
		if s := r.URL.Query().Get("status"); s != "" {
			status, _ = strconv.Atoi(s)
		}
		if n <= limit {
			w.WriteHeader(status)
			_, _ = io.WriteString(w, "failure "+strconv.Itoa(n))
			return
		}
	case "status":
		code, _ := strconv.Atoi(parts[1])
		w.WriteHeader(code)
		_, _ = io.WriteString(w, "status "+parts[1])
		return
	case "hang":
		select {
		case <-r.Context().Done():
			a.cancelled <- key
		case <-time.After(30 * time.Second):
		}
		return
	case "toggle":
		if ms, _ := strconv.Atoi(r.URL.Query().Get("sleep")); ms > 0 {
			time.Sleep(time.Duration(ms) * time.Millisecond)
		}
		if failing {
			w.WriteHeader(500)
			return
		}
	case "instance":
		if a.failAll {
			w.WriteHeader(503)
			return
		}
	}
	_, _ = io.WriteString(w, "ok "+strconv.Itoa(n))
}

func (a *testApp) Attempts(key string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.attempts[key]
}

func (a *testApp) Bodies(key string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.bodies[key]...)
}

func (a *testApp) Timeouts(key string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.timeouts[key]...)
}

func (a *testApp) SetFailing(key string, f bool) {
	a.mu.Lock()
	a.failing[key] = f
	a.mu.Unlock()
}
