// Package h1 is a minimal HTTP/1.1 client transport (an http.RoundTripper)
// for the sidecar's hot paths: to the callee sidecar over mTLS and to the
// local app over plain TCP.
//
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
// Not supported: HTTP/2, proxies, Expect: 100-continue, request trailers,
// obs-folded response header lines (rejected).
package h1
