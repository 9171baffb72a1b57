// Command echo is a sample HTTP app for meshd demos and end-to-end tests.
//
// Every path answers with JSON describing the request it received (method,
// path, query, headers including dapr-caller-app-id, body size and sha256)
// and the instance name, except:
//
//	/healthz                       200, or 503 after /admin/fail
//	/admin/fail, /admin/recover    make /healthz unhealthy / healthy again
//	/sse?n=5&interval=100ms        n server-sent events, one per interval
//	/download?bytes=N              streams N bytes
//	/upload                        reads the body as a stream; answers size and sha256
//	/status/{code}                 answers with that status and a JSON body
//	/sleep?d=2s                    waits d (at most 1 min), then answers as every path
//
// With --record FILE, every request carrying a Chaos-Id header is appended
// to FILE as one line "{id} {method} {name}" before it is answered (one
// O_APPEND write: it survives a kill -9 of the app once the answer left),
// so a test can check that no call was delivered twice or lost.
//
// Usage: echo --port 8080 --name echo-1 [--record FILE]
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Request is the JSON the echo app answers with.
type Request struct {
	Name       string              `json:"name"`
	Method     string              `json:"method"`
	Path       string              `json:"path"`
	RawQuery   string              `json:"rawQuery"`
	RequestURI string              `json:"requestURI"`
	Proto      string              `json:"proto"`
	Host       string              `json:"host"`
	Headers    map[string][]string `json:"headers"`
	BodyLength int64               `json:"bodyLength"`
	BodySHA256 string              `json:"bodySha256"`
	// The identity headers meshd stamps, lifted out for convenience.
	CallerAppID     string `json:"callerAppId"`
	CallerNamespace string `json:"callerNamespace"`
	CalleeAppID     string `json:"calleeAppId"`
}

// maxDownload bounds /download.
const maxDownload = 1 << 34

type app struct {
	name      string
	unhealthy atomic.Bool
	record    *os.File // --record: Chaos-Id lines (nil: off)
}

func newHandler(name string) http.Handler { return &app{name: name} }

// HeaderChaosID is the header whose value --record appends.
const HeaderChaosID = "Chaos-Id"

// ServeHTTP dispatches on the exact path. No http.ServeMux: it would clean
// the path and redirect, hiding what the sidecar delivered.
func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if a.record != nil {
		if id := r.Header.Get(HeaderChaosID); id != "" {
			line := strings.NewReplacer(" ", "_", "\n", "_").Replace(id) + " " + r.Method + " " + a.name + "\n"
			if _, err := a.record.WriteString(line); err != nil {
				writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "echo: record: " + err.Error()})
				return
			}
		}
	}
	p := r.URL.Path
	switch {
	case p == "/healthz":
		a.health(w)
	case p == "/admin/fail":
		a.unhealthy.Store(true)
		writeJSON(w, http.StatusOK, map[string]any{"name": a.name, "healthy": false})
	case p == "/admin/recover":
		a.unhealthy.Store(false)
		writeJSON(w, http.StatusOK, map[string]any{"name": a.name, "healthy": true})
	case p == "/sse":
		a.sse(w, r)
	case p == "/download":
		a.download(w, r)
	case p == "/upload":
		a.upload(w, r)
	case p == "/sleep":
		a.sleep(w, r)
	case strings.HasPrefix(p, "/status/"):
		a.status(w, strings.TrimPrefix(p, "/status/"))
	default:
		a.echo(w, r)
	}
}

func (a *app) health(w http.ResponseWriter) {
	if a.unhealthy.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"name": a.name, "healthy": false})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": a.name, "healthy": true})
}

func (a *app) echo(w http.ResponseWriter, r *http.Request) {
	n, sum, err := hashBody(r.Body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, Request{
		Name: a.name, Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
		RequestURI: r.RequestURI, Proto: r.Proto, Host: r.Host, Headers: r.Header,
		BodyLength: n, BodySHA256: sum,
		CallerAppID:     r.Header.Get("dapr-caller-app-id"),
		CallerNamespace: r.Header.Get("dapr-caller-namespace"),
		CalleeAppID:     r.Header.Get("dapr-callee-app-id"),
	})
}

func (a *app) upload(w http.ResponseWriter, r *http.Request) {
	n, sum, err := hashBody(r.Body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": a.name, "bytes": n, "sha256": sum})
}

func (a *app) download(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.URL.Query().Get("bytes"), 10, 64)
	if err != nil || n < 0 || n > maxDownload {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("bytes must be 0..%d", int64(maxDownload))})
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	_, _ = io.CopyN(w, pattern{}, n)
}

// pattern is an endless reader of the bytes 0, 1, ..., 255, 0, 1, ...
type pattern struct{}

func (pattern) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(i)
	}
	return len(p), nil
}

func (a *app) sse(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, err := strconv.Atoi(q.Get("n"))
	if q.Get("n") == "" {
		n, err = 5, nil
	}
	interval, err2 := time.ParseDuration(q.Get("interval"))
	if q.Get("interval") == "" {
		interval, err2 = 100*time.Millisecond, nil
	}
	if err != nil || err2 != nil || n < 0 || interval < 0 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "n must be a count and interval a duration"})
		return
	}
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	t := time.NewTicker(max(interval, time.Millisecond))
	defer t.Stop()
	for i := range n {
		if i > 0 {
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, "id: %d\nevent: tick\ndata: {\"name\":%q,\"seq\":%d,\"time\":%q}\n\n",
			i, a.name, i, time.Now().UTC().Format(time.RFC3339Nano))
		if flusher != nil {
			flusher.Flush()
		}
	}
}

// sleep waits ?d= (a Go duration, at most a minute) before it answers as
// echo does: a call in flight, for tests that kill the app mid-call.
func (a *app) sleep(w http.ResponseWriter, r *http.Request) {
	d, err := time.ParseDuration(r.URL.Query().Get("d"))
	if err != nil || d < 0 || d > time.Minute {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "d must be a duration of 0..1m"})
		return
	}
	select {
	case <-time.After(d):
	case <-r.Context().Done():
		return
	}
	a.echo(w, r)
}

func (a *app) status(w http.ResponseWriter, s string) {
	code, err := strconv.Atoi(s)
	if err != nil || code < 200 || code > 599 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "status must be 200..599"})
		return
	}
	writeJSON(w, code, map[string]any{"name": a.name, "status": code, "text": http.StatusText(code)})
}

func hashBody(body io.Reader) (int64, string, error) {
	h := sha256.New()
	n, err := io.Copy(h, body)
	if err != nil {
		return n, "", fmt.Errorf("echo: read body: %w", err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func main() {
	host, _ := os.Hostname()
	var (
		port = flag.Int("port", 8080, "port to listen on")
		addr = flag.String("address", "127.0.0.1", "address to listen on")
		name = flag.String("name", "echo@"+host, "instance name reported in every answer")
		rec  = flag.String("record", "", "append the Chaos-Id of every request to this file")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	h := &app{name: *name}
	if *rec != "" {
		f, err := os.OpenFile(*rec, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			slog.Error("echo: --record: " + err.Error())
			os.Exit(1)
		}
		defer f.Close()
		h.record = f
	}
	if err := run(ctx, net.JoinHostPort(*addr, strconv.Itoa(*port)), h); err != nil {
		slog.Error("echo: " + err.Error())
		os.Exit(1)
	}
}

func run(ctx context.Context, addr string, h *app) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	// Serve HTTP/1.1 and h2c, so --app-protocol h2c works too.
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	slog.Info("echo: listening", "addr", ln.Addr().String(), "name", h.name)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
