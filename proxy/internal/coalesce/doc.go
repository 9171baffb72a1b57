// Package coalesce gathers the writes that goroutines make to one connection
// during one scheduling round into a single write system call.
//
// An HTTP/2 connection between sidecars carries many streams, and each
// stream writes several frames (HEADERS, DATA, trailers, WINDOW_UPDATE), each
// followed by a flush. On the 2-vCPU bench VM a write to a loopback socket
// costs tens of microseconds (the receiver's TCP processing and wake-up run
// in the writer's context), so a connection that flushes every frame spends
// most of its time in the kernel. A Conn takes those flushes as cheap
// appends to a pending buffer; one flusher goroutine per busy connection,
// which lets the goroutines already runnable go first, writes everything
// pending at once.
//
// Writes return before the bytes reach the socket, as with any buffered
// writer: a write error is returned by the next Write (and Close), and Close
// first writes what is pending. Pending bytes are bounded per connection;
// a writer beyond the bound waits for the flusher.
package coalesce
