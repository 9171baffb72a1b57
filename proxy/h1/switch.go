package h1

import "os"

// Enabled selects this client for the sidecar's HTTP/1.1 hops (peer
// transport and app channel "http"). Set MESHD_H1_CLIENT=nethttp in the
// environment to fall back to net/http's Transport, e.g. to compare.
var Enabled = os.Getenv("MESHD_H1_CLIENT") != "nethttp"
