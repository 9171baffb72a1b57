package proxy

import (
	"net/http"

	"github.com/meshd/meshd/proxy/internal/h1"
	"github.com/meshd/meshd/proxy/internal/h2"
)

// h2Coalesce: the gRPC port's connections coalesce their writes
// (coalesce.Listener) under proxy/internal/h2's server too. That server
// already writes a unary answer's HEADERS, DATA and trailers at once, so
// the flusher goroutine is a hand-off more per call (see
// docs/performance.md, "proxy/internal/h2's server").
var h2Coalesce = false

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
