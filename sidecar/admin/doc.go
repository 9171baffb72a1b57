// Package admin is the sidecar's read-only admin endpoint: its wire format
// (Status, Decisions), the handler the sidecar serves on loopback, and the
// client meshctl reads it with.
//
// The endpoint answers GET (and HEAD) only, 405 otherwise, and only to a
// loopback Host (a page of another site that resolves its name to
// 127.0.0.1 gets 403): nothing it serves changes the sidecar.
//
//	GET /admin/v1/status                  Status
//	GET /admin/v1/decisions?after=SEQ     Decisions (the recent policy decisions)
package admin
