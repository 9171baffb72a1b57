package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// NotReady serves a sidecar's listeners until its proxy can (the first
// certificate from sentry has not arrived yet): every request on the
// app-facing HTTP port — /v1.0/healthz included — is answered 503 with the
// JSON error ERR_NOT_READY, every call on the gRPC port with Unavailable,
// at once; the internal port accepts connections and closes them, as there
// is no identity to present (a caller sidecar sees a failed handshake and
// tries another instance instead of waiting for its dial timeout). Stop
// hands the listeners, still open, to whoever serves them next.
type NotReady struct {
	reason atomic.Pointer[string]
	ports  []*notReadyPort
	log    *slog.Logger
	once   sync.Once
}

// deadliner is a listener whose Accept can be interrupted without closing
// it (*net.TCPListener, *net.UnixListener).
type deadliner interface {
	SetDeadline(t time.Time) error
}

type notReadyPort struct {
	l        net.Listener
	srv      *http.Server     // nil: close every connection (internal port)
	hl       *handoffListener // srv's
	stopping atomic.Bool
	done     chan struct{} // the accept loop ended
}

// ServeNotReady starts serving ls as not ready, with reason as the error
// message. A listener whose Accept cannot be interrupted without closing it
// is not served (it queues connections, as before).
func ServeNotReady(ls Listeners, reason string, log *slog.Logger) *NotReady {
	if log == nil {
		log = slog.Default()
	}
	n := &NotReady{log: log}
	n.reason.Store(&reason)
	for _, l := range []struct {
		l    net.Listener
		http bool
	}{{ls.HTTP, true}, {ls.GRPC, true}, {ls.Internal, false}} {
		if l.l == nil {
			continue
		}
		if _, ok := l.l.(deadliner); !ok {
			log.Warn("proxy: listener cannot be served as not ready", "addr", l.l.Addr().String())
			continue
		}
		pt := &notReadyPort{l: l.l, done: make(chan struct{})}
		if l.http {
			pt.hl = newHandoffListener(l.l.Addr())
			pt.srv = &http.Server{
				Handler:           n,
				ReadHeaderTimeout: 10 * time.Second,
				IdleTimeout:       10 * time.Second,
				MaxHeaderBytes:    64 << 10, // nothing is forwarded: no need to read more
				ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
				Protocols:         new(http.Protocols),
			}
			pt.srv.Protocols.SetHTTP1(true)
			pt.srv.Protocols.SetUnencryptedHTTP2(true) // h2c and gRPC
			go func() { _ = pt.srv.Serve(pt.hl) }()
		}
		n.ports = append(n.ports, pt)
		go pt.accept()
	}
	return n
}

// SetReason changes the message of the answers.
func (n *NotReady) SetReason(reason string) { n.reason.Store(&reason) }

// ServeHTTP answers every request: 503 ERR_NOT_READY (gRPC: Unavailable).
// An HTTP/1 connection closes after the answer, so that the client's next
// request, on a new connection, reaches the proxy once it serves.
func (n *NotReady) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 {
		w.Header()["Connection"] = []string{"close"}
	}
	writeError(w, isGRPCRequest(r), http.StatusServiceUnavailable, ErrCodeNotReady, *n.reason.Load())
}

func (pt *notReadyPort) accept() {
	defer close(pt.done)
	for {
		c, err := pt.l.Accept()
		if err != nil {
			if pt.stopping.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(5 * time.Millisecond) // EMFILE and the like
			continue
		}
		if pt.srv == nil {
			_ = c.Close()
			continue
		}
		pt.hl.push(c) // answered even if Stop began: Stop waits for this loop
	}
}

// Stop stops accepting (the listeners stay open; connections that arrive
// from now on wait in the backlog for the next server) and ends the
// connections served so far: HTTP/2 ones get GOAWAY, so gRPC clients
// reconnect to the next server. It returns once nothing more is accepted;
// the connections end in the background within a second. Safe to call
// more than once, and after the listeners were closed.
func (n *NotReady) Stop() {
	n.once.Do(func() {
		for _, pt := range n.ports {
			pt.stopping.Store(true)
			_ = pt.l.(deadliner).SetDeadline(aLongTimeAgo)
		}
		for _, pt := range n.ports {
			<-pt.done
			_ = pt.l.(deadliner).SetDeadline(time.Time{})
			if pt.srv == nil {
				continue
			}
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				if err := pt.srv.Shutdown(ctx); err != nil {
					_ = pt.srv.Close()
				}
			}()
		}
	})
}

// aLongTimeAgo is a deadline in the past: it interrupts a blocked call.
var aLongTimeAgo = time.Unix(1, 0)
