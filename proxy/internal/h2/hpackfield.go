package h2

import "golang.org/x/net/http2/hpack"

// hpackField is the HPACK field of name (lowercase) and value as both
// encoders write it. A value that is new on every call (a trace context,
// a deadline) would enter the connection's dynamic table, evict a field
// that does repeat, and cost the peer's decoder the same insertion and
// eviction; such a field goes out as a literal that neither side indexes
// (RFC 7541 §6.2.3). Everything else is indexed as usual.
func hpackField(name, value string) hpack.HeaderField {
	return hpack.HeaderField{Name: name, Value: value, Sensitive: unindexed(name)}
}

// unindexed reports whether name carries a value that differs per call
// (or, authorization, one that must not be kept in a shared table).
func unindexed(name string) bool {
	switch name {
	case "traceparent", "grpc-timeout", "authorization",
		"x-request-id", "grpc-trace-bin", "b3", "x-b3-traceid", "x-b3-spanid",
		"x-b3-parentspanid", "uber-trace-id", "x-amzn-trace-id", "x-cloud-trace-context":
		return true
	}
	return false
}
