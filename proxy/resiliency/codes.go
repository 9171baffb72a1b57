package resiliency

import (
	"fmt"
	"strconv"
	"strings"
)

// CodeSet is a set of status codes in [0, 640): HTTP statuses (100-599) or
// gRPC codes (0-16). The zero value is empty. Lookups never allocate.
type CodeSet struct {
	bits [10]uint64
}

// Has reports whether code is in the set.
func (s *CodeSet) Has(code int) bool {
	if code < 0 || code >= 640 {
		return false
	}
	return s.bits[code>>6]&(1<<(uint(code)&63)) != 0
}

// Add puts code (0 <= code < 640) in the set.
func (s *CodeSet) Add(code int) {
	if code >= 0 && code < 640 {
		s.bits[code>>6] |= 1 << (uint(code) & 63)
	}
}

// Empty reports whether the set has no code.
func (s *CodeSet) Empty() bool {
	return s.bits == [10]uint64{}
}

// Limits of the codes accepted by ParseCodes (Dapr's).
const (
	MinHTTPStatus = 100
	MaxHTTPStatus = 599
	MinGRPCCode   = 0
	MaxGRPCCode   = 16
)

// ParseCodes parses Dapr's status-code list: comma-separated codes and
// inclusive ranges ("429,500-599"; spaces around items are allowed), each
// in [lo, hi]. An empty string is an error: omit the field instead.
func ParseCodes(s string, lo, hi int) (CodeSet, error) {
	var set CodeSet
	if strings.TrimSpace(s) == "" {
		return set, fmt.Errorf("resiliency: empty status code list")
	}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return set, fmt.Errorf("resiliency: empty item in status code list %q", s)
		}
		a, b, isRange := strings.Cut(item, "-")
		from, err := parseCode(strings.TrimSpace(a), lo, hi)
		if err != nil {
			return set, err
		}
		to := from
		if isRange {
			if to, err = parseCode(strings.TrimSpace(b), lo, hi); err != nil {
				return set, err
			}
			if to < from {
				return set, fmt.Errorf("resiliency: status code range %q is reversed", item)
			}
		}
		for c := from; c <= to; c++ {
			set.Add(c)
		}
	}
	return set, nil
}

func parseCode(s string, lo, hi int) (int, error) {
	if s == "" || len(s) > 3 {
		return 0, fmt.Errorf("resiliency: invalid status code %q", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("resiliency: invalid status code %q", s)
		}
	}
	n, _ := strconv.Atoi(s)
	if n < lo || n > hi {
		return 0, fmt.Errorf("resiliency: status code %d out of range [%d, %d]", n, lo, hi)
	}
	return n, nil
}
