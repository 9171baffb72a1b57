// Package h1 is the sidecar's HTTP/1.x on its hot paths: a minimal client
// transport (an http.RoundTripper) to the callee sidecar over mTLS and to
// the local app over plain TCP, and a server (Server) for the app-facing
// HTTP port and the HTTP/1.1 connections of the internal port.
//
// # Server
//
// net/http's server starts a background read on every connection after
// every request (a goroutine wake-up, a read syscall and two deadline
// changes per call) and parses with textproto into fresh maps. Server
// serves each connection on one goroutine: it reads the head through the
// connection's bufio.Reader, parses it in one pass into one string (keys and
// values are substrings, common keys interned), calls the handler, and
// writes the answer through a bufio.Writer in one write when the handler
// does not flush. The idle deadline is refreshed at most once a second and
// the header deadline is set only when a head is not already buffered, so a
// busy connection touches no timer per request. A handler that runs longer
// than 100 ms gets what net/http gives every request: a read watching for
// the client to go away, which cancels the request's context. That context
// is a field of the request's ResponseWriter (no allocation of its own) and
// ends when the handler returns, as net/http's does; a Transport exchange
// made under it hooks onto it in place instead of through
// context.AfterFunc. A proxy handler can hand an answer's header map to the
// ResponseWriter as it is (its AdoptHeader method) instead of copying it,
// and, if it keeps no request header past its return (Server.ReuseHeader),
// a connection parses each request's header into the last one's map and
// values array, cleared.
//
// Framing is strict (RFC 9112 §6): Content-Length together with
// Transfer-Encoding, conflicting or malformed lengths, any coding but a lone
// "chunked", folded lines, whitespace before a colon, control bytes in
// values, a missing or repeated Host and unknown Expect values are refused
// (400, 417, 431, 501, 505) and the connection closes; so is a head with
// more than MaxHeaderFields fields (431, counted while parsing). A request
// body must make BodyProgress bytes of progress per BodyReadTimeout of
// waiting on the client, or its reads fail with ErrBodyTimeout (the
// handler may answer 408). FuzzReadRequest holds
// the parser against net/http's: what Server accepts, net/http reads the
// same way. Answers without a known length are sent with Content-Length when
// the handler returns within 2 KiB and unflushed, chunked (with trailers,
// declared or http.TrailerPrefix) otherwise, or until the close for
// HTTP/1.0. An unread request body already buffered is skipped; one still
// arriving closes the connection gently (half-close, 500 ms drain), so the
// client reads the answer before any reset.
//
// Unlike net/http: no Content-Type sniffing (the app's answer is passed on as
// it is), no Hijack and no protocol upgrade (101 ends the connection).
//
// # Client
// Unlike net/http's Transport, which runs a read and a write goroutine per
// connection and hands every response across goroutines, a Transport does
// the whole exchange on the caller's goroutine: it takes an idle connection
// (LIFO, per address, bounded, idle timeout), writes the request line,
// headers and a small body of known length in one write, reads the response
// headers on the same goroutine through a pooled bufio.Reader, and returns a
// body tied to the connection. Reading the body to EOF puts the connection
// back in the pool; Close before EOF, an error, or "Connection: close"
// closes it.
//
// Request bodies of unknown length or above Transport.InlineBody are written
// by a separate goroutine (full duplex: a server that answers before reading
// the upload cannot deadlock the call); unknown lengths are sent chunked.
// Response bodies may be framed by Content-Length, chunked (trailers land in
// Response.Trailer at EOF) or the end of the connection; HEAD, 1xx (skipped,
// except 101), 204 and 304 answers carry no body.
//
// A request whose pooled connection turns out to be closed by the server is
// retried once on a fresh connection, under net/http's rule: only if the
// write failed before any byte left, or the read met the end of the
// connection (or an error) before any byte of the answer, and in the second
// case only for replayable requests (GET, HEAD, OPTIONS, TRACE or with an
// Idempotency-Key header). The body must be resendable: none, never read,
// sent inline (held in memory) or with GetBody.
//
// Cancelling the request's context closes the connection; the call (or the
// body read) then fails with the context's error.
//
// Go's reads try the read syscall before they wait, so the read right after
// a request is written finds nothing (EAGAIN) on every exchange. A
// Transport writes a request that leaves in one write (no body, or one
// inline with the head) inside syscall.RawConn.Read's first callback and waits for readability before
// it reads the answer: one read syscall fewer per exchange, and safe
// because the poller's readiness is reset before the write, not after it
// (see waitfirst.go). MESHD_H1_WAIT_FIRST=off turns it off.
//
// Not supported: HTTP/2, proxies, Expect: 100-continue, request trailers,
// obs-folded response header lines (rejected).
package h1
