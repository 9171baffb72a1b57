// Package hostport gives the address a client dials for a request URL: its
// host and port, the scheme's default port when the URL names none. The
// HTTP/1.1 and HTTP/2 transports of proxy/internal share it.
package hostport
