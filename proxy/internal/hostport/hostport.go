package hostport

import (
	"net"
	"net/url"
)

// DialAddr is the host:port to dial for u: u.Host when it carries a port,
// else u's host with 443 for https and 80 for anything else (IPv6 hosts
// bracketed).
func DialAddr(u *url.URL) string {
	if _, _, err := net.SplitHostPort(u.Host); err == nil {
		return u.Host
	}
	port := "80"
	if u.Scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port)
}
