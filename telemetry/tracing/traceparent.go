package tracing

import (
	"unsafe"

	"go.opentelemetry.io/otel/trace"
)

// Header keys in canonical form (http.Header and gRPC metadata alike).
const (
	HeaderTraceparent = "Traceparent"
	HeaderTracestate  = "Tracestate"
)

// traceparentLen is the length of a version-00 traceparent.
const traceparentLen = 55

// ParseTraceparent parses a W3C traceparent header value
// ("00-{trace-id}-{parent-id}-{flags}"). It accepts future versions as the
// W3C spec asks (the version-00 prefix, then "-" and anything), rejects
// version ff, upper-case hex and all-zero IDs. It does not allocate.
func ParseTraceparent(s string) (trace.TraceID, trace.SpanID, trace.TraceFlags, bool) {
	var tid trace.TraceID
	var sid trace.SpanID
	if len(s) < traceparentLen || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return tid, sid, 0, false
	}
	ver, ok := hexByte(s[0], s[1])
	if !ok || ver == 0xff || (ver == 0 && len(s) != traceparentLen) || (len(s) > traceparentLen && s[traceparentLen] != '-') {
		return tid, sid, 0, false
	}
	if !decodeHex(tid[:], s[3:35]) || !decodeHex(sid[:], s[36:52]) {
		return tid, sid, 0, false
	}
	flags, ok := hexByte(s[53], s[54])
	if !ok || !tid.IsValid() || !sid.IsValid() {
		return tid, sid, 0, false
	}
	return tid, sid, trace.TraceFlags(flags), true
}

// FormatTraceparent is the version-00 traceparent of sc.
func FormatTraceparent(sc trace.SpanContext) string {
	var b [traceparentLen]byte
	b[0], b[1], b[2] = '0', '0', '-'
	tid, sid := sc.TraceID(), sc.SpanID()
	for i, c := range tid {
		b[3+2*i], b[4+2*i] = hexDigits[c>>4], hexDigits[c&15]
	}
	b[35] = '-'
	for i, c := range sid {
		b[36+2*i], b[37+2*i] = hexDigits[c>>4], hexDigits[c&15]
	}
	b[52] = '-'
	f := byte(sc.TraceFlags())
	b[53], b[54] = hexDigits[f>>4], hexDigits[f&15]
	return string(b[:])
}

const hexDigits = "0123456789abcdef"

// traceparentValue is a header value and its bytes in one allocation.
type traceparentValue struct {
	b [traceparentLen]byte
	v [1]string
}

// newTraceparent is the version-00 traceparent of (tid, sid, flags) as a
// header value ([]string of one), made with one allocation.
func newTraceparent(tid trace.TraceID, sid trace.SpanID, flags trace.TraceFlags) []string {
	p := new(traceparentValue)
	b := &p.b
	b[0], b[1], b[2] = '0', '0', '-'
	for i, c := range tid {
		b[3+2*i], b[4+2*i] = hexDigits[c>>4], hexDigits[c&15]
	}
	b[35] = '-'
	for i, c := range sid {
		b[36+2*i], b[37+2*i] = hexDigits[c>>4], hexDigits[c&15]
	}
	b[52] = '-'
	f := byte(flags)
	b[53], b[54] = hexDigits[f>>4], hexDigits[f&15]
	// The bytes are never written again: the string may alias them.
	p.v[0] = unsafe.String(&b[0], traceparentLen)
	return p.v[:]
}

// hexVal maps a lower-case hex digit to its value and every other byte to
// hexBad (W3C trace context allows lower case only).
var hexVal = func() (t [256]byte) {
	for i := range t {
		t[i] = hexBad
	}
	for c := byte('0'); c <= '9'; c++ {
		t[c] = c - '0'
	}
	for c := byte('a'); c <= 'f'; c++ {
		t[c] = c - 'a' + 10
	}
	return t
}()

// hexBad marks a byte that is not a lower-case hex digit in hexVal.
const hexBad = 0x10

func hexByte(hi, lo byte) (byte, bool) {
	h, l := hexVal[hi], hexVal[lo]
	return h<<4 | l&0x0f, (h|l)&hexBad == 0
}

// decodeHex decodes the 2*len(dst) lower-case hex digits of s into dst;
// false if any is not one. A table lookup per digit and one test at the
// end: the traceparent of every call is parsed here.
func decodeHex(dst []byte, s string) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	var bad byte
	for i := range dst {
		h, l := hexVal[s[2*i]], hexVal[s[2*i+1]]
		bad |= h | l
		dst[i] = h<<4 | l&0x0f
	}
	return bad&hexBad == 0
}
