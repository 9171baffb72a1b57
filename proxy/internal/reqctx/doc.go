// Package reqctx is the context of one request served by the sidecar's own
// HTTP/1.1 and HTTP/2 servers (proxy/internal/h1, proxy/internal/h2).
//
// A Ctx lives inside its server's per-request state (the HTTP/1.1
// response, the HTTP/2 stream), so serving a request allocates no
// context. It ends when the server cancels it (the handler returned, the
// client went away or reset the stream, the connection ended) or when its
// parent (the connection's context) ends. Its done channel is made only
// when someone asks for it.
//
// A Transport sending a call on under a Ctx registers the call in place
// (Watch, with a Link inside the call's own state), where
// context.AfterFunc on a context.WithCancel would allocate an afterFunc
// context, two closures, the parent's done channel and its children map;
// when the Ctx ends, the call is aborted. Ctx also implements AfterFunc,
// so contexts derived from it (context.WithTimeout for a deadline the
// caller sent) hook onto it without a goroutine of their own.
package reqctx
