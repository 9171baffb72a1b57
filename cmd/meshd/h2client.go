package main

import (
	"fmt"

	"github.com/spf13/pflag"
)

// h2ClientDefault is --h2-client's default (before MESHD_H2_CLIENT): meshd's
// own, which passed the proxy, end-to-end and chaos suites and costs less
// CPU per call than net/http's (docs/performance.md, "Our own HTTP/2 client").
const h2ClientDefault = "h2"

// addH2ClientFlag adds --h2-client: which HTTP/2 client sends to peer
// sidecars and to an h2c or gRPC app.
func addH2ClientFlag(f *pflag.FlagSet, v *string) {
	f.StringVar(v, "h2-client", envOr("MESHD_H2_CLIENT", h2ClientDefault), "HTTP/2 client to peer sidecars and an h2c or gRPC app: h2 (meshd's) or nethttp (Go's net/http; env MESHD_H2_CLIENT)")
}

// parseH2Client reads --h2-client: whether net/http sends HTTP/2 instead
// of proxy/internal/h2.
func parseH2Client(v string) (netHTTP bool, err error) {
	switch v {
	case "h2":
		return false, nil
	case netHTTPImpl:
		return true, nil
	}
	return false, fmt.Errorf("meshd: --h2-client %q: want h2 or %s", v, netHTTPImpl)
}
