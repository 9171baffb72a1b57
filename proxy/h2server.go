package proxy

import (
	"net/http"

	"github.com/meshd/meshd/proxy/internal/h1"
	"github.com/meshd/meshd/proxy/internal/h2"
)

// h2Coalesce: the gRPC port's connections coalesce their writes
// (coalesce.Listener) under proxy/internal/h2's server too, as under
// net/http's. That server already writes a unary answer's HEADERS, DATA and
// trailers at once, but the calls of a gRPC client share one connection,
// and the flusher batches their answers: BenchmarkGRPCUnary measured
// 231-242 µs of CPU per call with it, 254-320 without (docs/performance.md,
// "proxy/internal/h2's server").
var h2Coalesce = true

// newH2Server is proxy/internal/h2's server for a port (--h2-server h2):
// the limits net/http's server has there (h is already wrapped by
// limited), and the caller's identity per connection on the internal mTLS
// port.
func (p *Proxy) newH2Server(h http.Handler, hs *http.Server, identity bool) *h2.Server {
	s := &h2.Server{
		Handler:           h,
		MaxHeaderListSize: h1.DefaultMaxRequestHeader,
		ReadHeaderTimeout: hs.ReadHeaderTimeout,
		IdleTimeout:       hs.IdleTimeout,
		Log:               p.log,
	}
	if identity {
		s.ConnContext = connContext
	}
	return s
}
