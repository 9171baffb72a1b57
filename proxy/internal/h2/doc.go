// Package h2 is the sidecar's lean HTTP/2 (RFC 9113) server and client, built on
// golang.org/x/net/http2's Framer and hpack (no frame parsing or HPACK of
// its own).
//
// # Server
//
// Server.ServeConn serves one connection (TLS with ALPN "h2", or cleartext
// with the preface, "h2c"). What it does differently from net/http's
// HTTP/2 server, for fewer goroutine hand-offs per call:
//
//   - One reader goroutine per connection decodes frames. A request's
//     handler runs on a worker taken from a small per-Server pool of parked
//     goroutines (their stacks already grown), or a new one when none is
//     idle: one hand-off per request.
//   - There is no serve loop that owns the writes. A handler writes its
//     HEADERS, DATA and trailers itself, under the connection's write
//     mutex (the HPACK encoder is under the same mutex), into a buffered
//     writer that is flushed on Flush and when the handler returns: the
//     headers, a small body and the trailers of a unary gRPC answer leave
//     in one write.
//   - A PING ack waits in that buffer when the client's next frames are
//     already read (a gRPC client's BDP ping arrives right before its next
//     request): that request's answer carries it, one socket write per
//     call fewer at full load. Before the reader waits for the socket, an
//     ack still buffered is flushed at once if no handler runs, else within
//     10 ms (a handler may run long). A PING alone is acked at once.
//   - Flow control: a writer waits until the connection's and the
//     stream's send windows open (WINDOW_UPDATE); the receive windows are
//     replenished as the handler reads the body, in batches of a quarter
//     window, not per frame.
//   - The request body implements Buffered() (n int, final bool): how many
//     bytes can be read without waiting, and whether they are all that is
//     left (END_STREAM has arrived).
//
// The request is what net/http's server gives a handler: Proto
// "HTTP/2.0", Host from :authority, RemoteAddr, TLS, ContentLength from
// content-length or -1, a context with ConnContext's values, cancelled
// when the handler returns, the client resets the stream or the connection
// ends. That context (a reqctx.Ctx, as the HTTP/1.1 server's) and the
// request are fields of the stream (no allocation of their own); the
// context implements AfterFunc, and this package's Transport, sending a
// call on under such a context, registers its stream there in place
// instead of through context.AfterFunc. A handler may hand a
// forwarded answer's header map to the ResponseWriter as it is
// (its AdoptHeader method). Trailers are
// declared with a Trailer header or set with http.TrailerPrefix, as with
// net/http. The ResponseWriter is also an http.Flusher and supports
// http.ResponseController's Flush, EnableFullDuplex, SetReadDeadline and
// SetWriteDeadline.
//
// # Limits (the internal port faces other hosts)
//
//   - MaxConcurrentStreams: a stream beyond it is refused (RST_STREAM
//     REFUSED_STREAM); handlers of reset streams still count until they
//     return.
//   - MaxHeaderListSize: a larger header block is answered 431; one far
//     larger (or endless CONTINUATION frames) ends the connection.
//   - Rapid reset (CVE-2023-44487): streams the client resets cost a
//     budget that completed streams refill; past it, GOAWAY
//     ENHANCE_YOUR_CALM.
//   - Floods of PING, SETTINGS, empty DATA, PRIORITY frames, of
//     WINDOW_UPDATE and RST_STREAM frames on closed streams, and of
//     frames answered with RST_STREAM (DATA on closed streams, malformed
//     requests): a per-second budget that grows with the requests served;
//     past it, GOAWAY ENHANCE_YOUR_CALM.
//   - ReadHeaderTimeout bounds the preface and every frame once its first
//     byte arrived; IdleTimeout closes a connection without streams
//     (GOAWAY NO_ERROR); SendTimeout bounds how long a response write may
//     wait for the client's flow-control window or the socket (every
//     socket write gets a fresh deadline; a failed one closes the
//     connection and fails the handlers' writes), so a client that never
//     opens its window or never reads cannot pin a handler.
//   - Malformed requests (RFC 9113 §8.3: missing or repeated pseudo-header
//     fields, connection-specific fields, uppercase names, content-length
//     not matching the DATA) are stream errors (PROTOCOL_ERROR); frames on
//     idle streams, a bad preface, flow-control violations are connection
//     errors. CONNECT is answered 405.
//
// # Client (files transport*.go and client*.go)
//
// Transport is a lean HTTP/2 client (RFC 9113) on x/net/http2's Framer and
// hpack, made for the sidecar's gRPC and HTTP/2 legs. Compared with
// net/http's client it saves goroutine hand-offs per call:
//
//   - RoundTrip encodes the request headers (HPACK, under the connection's
//     write lock) and writes them from the caller's goroutine. A request
//     body that is already all there (nil, http.NoBody, a body whose
//     Buffered() reports final, or a small body of known length) leaves in
//     the same write, END_STREAM included: no goroutine. Any other body is
//     sent by one body-writer goroutine per stream, so a bidirectional
//     stream can receive while it sends.
//   - One reader goroutine per connection reads every frame. It hands the
//     response headers to the waiting caller once; DATA goes into a
//     per-stream buffer that the caller drains (no channel send per frame).
//     The response body implements Buffered() (n int, final bool), so a
//     proxy's copy loop can tell that the end is already there and skip a
//     flush. Trailers land in resp.Trailer before the body returns io.EOF.
//
// One connection per host:port carries many streams; another is opened
// when the server's SETTINGS_MAX_CONCURRENT_STREAMS is reached or after a
// GOAWAY. Flow control works both ways: a sender blocks on the peer's
// connection and stream windows, never drops; the receive windows are
// replenished in batches as the caller consumes the body, so what is
// buffered per stream is bounded by the stream window.
//
// Errors: a dial error is returned as DialContext returned it. A stream the
// server refused before processing it (REFUSED_STREAM, or beyond a GOAWAY's
// last stream ID) is retried on another connection when its body can be
// sent again; otherwise the error wraps ErrStreamRefused, which tells the
// caller that the request was not processed. When Keepalive is set, a
// connection silent for Keepalive gets a PING; no answer within
// KeepaliveTimeout closes it, and its streams fail with ErrPeerUnresponsive.
// A context that ends, or a response body closed before its end, resets the
// stream (RST_STREAM CANCEL).
//
// # Header blocks (both halves)
//
// A HEADERS frame and its CONTINUATION frames are decoded by a
// per-connection reader (metaheaders.go) on hpack.Decoder, with the checks
// and limits of the Framer's ReadMetaHeaders: field names and values,
// pseudo-header order, names and duplicates, the header list size
// (truncated past it, the connection ended when far past it). The decoded
// frame and its field slice are reused by the next header block, so the
// reader goroutine is done with a block before it reads on.
//
// Both encoders send a field whose value is new on every call (traceparent,
// grpc-timeout, the common request and trace ids; authorization for
// secrecy) as a literal that neither side indexes (hpackfield.go): such a
// value would take a slot of the connection's dynamic table, evict a field
// that repeats, and cost the peer's decoder the same insertion.
package h2
