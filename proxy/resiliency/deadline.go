package resiliency

import (
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
