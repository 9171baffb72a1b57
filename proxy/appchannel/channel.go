package appchannel

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/meshd/meshd/proxy/internal/coalesce"
	"github.com/meshd/meshd/proxy/internal/h1"
	"github.com/meshd/meshd/proxy/internal/h2"
)

// Protocol is an app protocol.
type Protocol string

// App protocols.
const (
	HTTP  Protocol = "http"
	HTTPS Protocol = "https"
	H2C   Protocol = "h2c"
	GRPC  Protocol = "grpc"
	GRPCS Protocol = "grpcs"
)

// ParseProtocol validates an --app-protocol value.
func ParseProtocol(s string) (Protocol, error) {
	switch p := Protocol(s); p {
	case HTTP, HTTPS, H2C, GRPC, GRPCS:
		return p, nil
	}
	return "", fmt.Errorf("appchannel: unknown app protocol %q (want http, https, h2c, grpc or grpcs)", s)
}

// IsGRPC reports whether the app speaks gRPC.
func (p Protocol) IsGRPC() bool { return p == GRPC || p == GRPCS }

// IsTLS reports whether the app is reached over TLS.
func (p Protocol) IsTLS() bool { return p == HTTPS || p == GRPCS }

// Config configures a Channel.
type Config struct {
	Protocol Protocol // default http
	Address  string   // host of the app, default 127.0.0.1
	Port     int      // required
	// TLS, if set, is the client TLS config for https/grpcs. The default
	// does not verify the app's certificate (see the package doc).
	TLS *tls.Config
	// MaxIdleConns bounds idle HTTP/1.1 connections kept to the app
	// (default 1024).
	MaxIdleConns int
	// DialTimeout bounds connecting to the app (default 5s).
	DialTimeout time.Duration
	// NetHTTPClient sends HTTP/1.1 with net/http's Transport instead of
	// proxy/internal/h1's (--h1-client nethttp), e.g. to compare.
	NetHTTPClient bool
	// NetHTTPH2Client sends to an h2c or gRPC app with net/http's HTTP/2
	// Transport instead of proxy/internal/h2's (--h2-client nethttp).
	NetHTTPH2Client bool
}

// Channel sends requests to the local app.
type Channel struct {
	proto  Protocol
	scheme string
	host   string // host:port
	rt     *http.Transport
	h1     *h1.Transport // protocol http, unless Config.NetHTTPClient
	h2     *h2.Transport // protocols h2c and grpc, unless Config.NetHTTPH2Client
}

// New builds a Channel. It does not connect.
func New(cfg Config) (*Channel, error) {
	if cfg.Protocol == "" {
		cfg.Protocol = HTTP
	}
	if _, err := ParseProtocol(string(cfg.Protocol)); err != nil {
		return nil, err
	}
	if cfg.Address == "" {
		cfg.Address = "127.0.0.1"
	}
	if cfg.Port <= 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("appchannel: app port %d out of range", cfg.Port)
	}
	if cfg.MaxIdleConns <= 0 {
		cfg.MaxIdleConns = 1024
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	d := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConns:        cfg.MaxIdleConns,
		MaxIdleConnsPerHost: cfg.MaxIdleConns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		TLSHandshakeTimeout: cfg.DialTimeout,
		Protocols:           new(http.Protocols),
		// Room for the headers and a small body (h1.DefaultInlineBody) in one write.
		WriteBufferSize: 16 << 10,
	}
	c := &Channel{proto: cfg.Protocol, host: net.JoinHostPort(cfg.Address, strconv.Itoa(cfg.Port)), rt: t}
	switch cfg.Protocol {
	case HTTP:
		c.scheme = "http"
		t.Protocols.SetHTTP1(true)
		if !cfg.NetHTTPClient {
			c.h1 = &h1.Transport{DialContext: d.DialContext, MaxIdlePerHost: cfg.MaxIdleConns, IdleTimeout: t.IdleConnTimeout, InlineBody: h1.DefaultInlineBody}
		}
	case H2C, GRPC:
		c.scheme = "http"
		t.Protocols.SetUnencryptedHTTP2(true)
		// One multiplexed connection, several frames per call: coalesce
		// the writes (see proxy/internal/coalesce).
		t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return coalesce.New(conn), nil
		}
		if !cfg.NetHTTPH2Client {
			c.h2 = &h2.Transport{DialContext: t.DialContext, IdleTimeout: t.IdleConnTimeout}
		}
	case HTTPS, GRPCS:
		c.scheme = "https"
		tc := cfg.TLS
		if tc == nil {
			tc = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} //nolint:gosec // see package doc
		}
		t.TLSClientConfig = tc
		t.Protocols.SetHTTP2(true)
		if cfg.Protocol == HTTPS {
			t.Protocols.SetHTTP1(true)
		}
	}
	return c, nil
}

// Protocol returns the app protocol.
func (c *Channel) Protocol() Protocol { return c.proto }

// Addr returns the app's host:port.
func (c *Channel) Addr() string { return c.host }

// Scheme returns "http" or "https".
func (c *Channel) Scheme() string { return c.scheme }

// URL returns the URL of path (already escaped, canonical) and raw query on
// the app. The path is carried in Opaque so that it reaches the app byte for
// byte, never re-escaped.
func (c *Channel) URL(path, rawQuery string) *url.URL {
	return &url.URL{Scheme: c.scheme, Host: c.host, Opaque: path, RawQuery: rawQuery}
}

// RoundTrip sends req to the app. req.URL must come from URL.
//
// To an HTTP/1.1 app, a body of known length up to 8 KiB is read first and
// sent with the headers in one write: net/http flushes the headers on their
// own before a body it cannot tell is in memory, which costs a second
// syscall and TCP segment per call.
func (c *Channel) RoundTrip(req *http.Request) (*http.Response, error) {
	if c.h1 != nil {
		resp, err := c.h1.RoundTrip(req) // one write for head and small body
		if errors.Is(err, h1.ErrRequestBody) {
			return nil, fmt.Errorf("appchannel: read request body: %w", err)
		}
		return resp, err
	}
	if c.h2 != nil {
		resp, err := c.h2.RoundTrip(req)
		if errors.Is(err, h2.ErrRequestBody) {
			return nil, fmt.Errorf("appchannel: read request body: %w", err)
		}
		return resp, err
	}
	if req.Body != nil && req.ContentLength > 0 && req.ContentLength <= h1.DefaultInlineBody && c.proto != H2C && !c.proto.IsGRPC() {
		b := make([]byte, req.ContentLength)
		if _, err := io.ReadFull(req.Body, b); err != nil {
			req.Body.Close()
			return nil, fmt.Errorf("appchannel: read request body: %w", err)
		}
		req.Body.Close()
		// A copy: the caller's *http.Request is not ours to change.
		r2 := *req
		r2.Body = io.NopCloser(bytes.NewReader(b))
		req = &r2
	}
	return c.rt.RoundTrip(req)
}

// Close closes idle connections to the app.
func (c *Channel) Close() {
	c.rt.CloseIdleConnections()
	if c.h1 != nil {
		c.h1.CloseIdleConnections()
	}
	if c.h2 != nil {
		c.h2.CloseIdleConnections()
	}
}
