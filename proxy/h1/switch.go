package h1

import "os"

// Enabled selects this client for the sidecar's HTTP/1.1 hops (peer
// transport and app channel "http"). Set MESHD_H1_CLIENT=nethttp in the
// environment to fall back to net/http's Transport, e.g. to compare.
var Enabled = os.Getenv("MESHD_H1_CLIENT") != "nethttp"

// ServerEnabled selects this package's Server for the sidecar's HTTP/1.x
// connections (app-facing HTTP port, internal port). Set
// MESHD_H1_SERVER=nethttp to serve them with net/http's server instead.
var ServerEnabled = os.Getenv("MESHD_H1_SERVER") != "nethttp"
