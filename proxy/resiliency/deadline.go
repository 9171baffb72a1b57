package resiliency

import (
	"math"
	"strconv"
	"time"
)

// HeaderTimeout is meshd's per-call timeout header: a Go duration ("2s",
// "1500ms") or a bare integer of milliseconds. An app sends it to its
// sidecar to bound a call; the caller sidecar sends the time left to the
// callee sidecar, which bounds the call to its app by it and passes the
// time left on to the app (gRPC apps get grpc-timeout instead). Dapr has
// no such header.
const HeaderTimeout = "Meshd-Timeout"

// ParseTimeout parses a Meshd-Timeout value; ok is false when it is not a
// positive duration.
func ParseTimeout(v []string) (time.Duration, bool) {
	if len(v) != 1 || len(v[0]) > 32 {
		return 0, false
	}
	d, err := ParseDuration(v[0])
	return d, err == nil && d > 0
}

// FormatTimeout formats d for Meshd-Timeout, in whole milliseconds
// (at least 1ms).
func FormatTimeout(d time.Duration) string {
	ms := int64(d / time.Millisecond)
	if ms < 1 {
		ms = 1
	}
	return strconv.FormatInt(ms, 10) + "ms"
}

// FormatGRPCTimeout formats d as a grpc-timeout value (at most 8 digits).
func FormatGRPCTimeout(d time.Duration) string {
	if d <= 0 {
		return "1n"
	}
	for _, u := range [...]struct {
		d time.Duration
		c string
	}{{time.Nanosecond, "n"}, {time.Microsecond, "u"}, {time.Millisecond, "m"}, {time.Second, "S"}, {time.Minute, "M"}} {
		if n := int64(d / u.d); n < 1e8 {
			return strconv.FormatInt(n, 10) + u.c
		}
	}
	return strconv.FormatInt(int64(d/time.Hour), 10) + "H"
}

// ParseGRPCTimeout parses a grpc-timeout value ("100m", "5S": at most 8
// digits and a unit, H M S m u n); false for anything else. Values beyond
// time.Duration's range (above ~292 years) are its maximum, as grpc-go
// reads them, never a negative duration.
func ParseGRPCTimeout(s string) (time.Duration, bool) {
	if len(s) < 2 || len(s) > 9 {
		return 0, false
	}
	for i := 0; i < len(s)-1; i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
	if err != nil {
		return 0, false
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	if n > math.MaxInt64/int64(unit) {
		return math.MaxInt64, true
	}
	return time.Duration(n) * unit, true
}
