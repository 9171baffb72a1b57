package resiliency

import (
	"testing"
	"time"
)

// FuzzParseGRPCTimeout: any grpc-timeout value parses to a duration that is
// not negative, or is refused; what it parses to formats back into a value
// that parses to at most it and no less than 8 digits allow
// (FormatGRPCTimeout rounds down to 8 digits of its unit; zero is sent as
// 1n, the smallest deadline there is).
func FuzzParseGRPCTimeout(f *testing.F) {
	for _, s := range []string{"100m", "5S", "99999999H", "0n", "1", "x", "+1S", "18446744073709551615n", "99999999H", "2562048H", "2562047H"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := ParseGRPCTimeout(s)
		if !ok {
			return
		}
		if d < 0 {
			t.Fatalf("ParseGRPCTimeout(%q) = %v", s, d)
		}
		if d == 0 {
			return
		}
		back, ok := ParseGRPCTimeout(FormatGRPCTimeout(d))
		allowed := d / 1e7
		if d >= 1e8*time.Minute {
			allowed = time.Hour // only hours are left
		}
		if !ok || back > d || back < d-allowed {
			t.Fatalf("ParseGRPCTimeout(%q) = %v, formatted %q, parsed back %v %v", s, d, FormatGRPCTimeout(d), back, ok)
		}
	})
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(daprDocsExample))
	f.Add([]byte(daprDefaultsExample))
	f.Add([]byte(daprMatchingExample))
	f.Add([]byte("apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nspec:\n  policies:\n    circuitBreakers:\n      cb: {trip: 'requests > 3 && totalFailures > 1'}\n"))
	f.Add([]byte("apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nspec: &a {targets: {apps: {x: *a}}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse("fuzz.yaml", data)
		if err != nil {
			return
		}
		c := New(s)
		for app := range s.Apps {
			set := c.For(app, "default")
			if set == nil {
				continue
			}
			if set.Retry != nil && (set.Retry.Retries < 0 || set.Retry.Retries > MaxRetriesCap) {
				t.Fatalf("retries %d outside [0, %d]", set.Retry.Retries, MaxRetriesCap)
			}
			if set.Breaker != nil {
				p := set.Breaker.Policy()
				if p.MaxRequests == 0 || p.Timeout <= 0 || p.Trip == nil {
					t.Fatalf("breaker policy without defaults: %+v", p)
				}
				p.Trip.Eval(Counts{Requests: 1, TotalFailures: 1, ConsecutiveFailures: 1})
			}
		}
	})
}

func FuzzParseCodes(f *testing.F) {
	for _, s := range []string{"429,500-599", "1-4,8-11,13,14", "", "500-", "-5", " 1 , 2 ", "599-100", "0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, r := range [][2]int{{MinHTTPStatus, MaxHTTPStatus}, {MinGRPCCode, MaxGRPCCode}} {
			set, err := ParseCodes(s, r[0], r[1])
			if err != nil {
				continue
			}
			if set.Empty() {
				t.Fatalf("ParseCodes(%q) accepted an empty set", s)
			}
			for c := 0; c < 640; c++ {
				if set.Has(c) && (c < r[0] || c > r[1]) {
					t.Fatalf("ParseCodes(%q) has %d outside [%d, %d]", s, c, r[0], r[1])
				}
			}
		}
	})
}
