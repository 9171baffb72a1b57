package resiliency

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The Resiliency examples of Dapr's documentation, unchanged, in
// testdata/dapr-docs (tests/resiliency runs them against real sidecars):
// the overview page's full example, the default-policies example and the
// retry-matching example.
var (
	daprDocsExample     = docsExample("overview.yaml")
	daprDefaultsExample = docsExample("defaults.yaml")
	daprMatchingExample = docsExample("matching.yaml")
)

func docsExample(name string) string {
	b, err := os.ReadFile(filepath.Join("testdata", "dapr-docs", name))
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestParseDaprExamples(t *testing.T) {
	s, err := Parse("docs.yaml", []byte(daprDocsExample))
	if err != nil {
		t.Fatal(err)
	}
	if s.Timeouts["general"] != 5*time.Second || s.Timeouts["important"] != time.Minute {
		t.Errorf("timeouts %v", s.Timeouts)
	}
	if r := s.Retries["important"]; r.Policy != PolicyConstant || r.Duration != 5*time.Second || r.MaxRetries != 30 || r.Retries != MaxRetriesCap {
		t.Errorf("important %+v", r)
	}
	if r := s.Retries["retryForever"]; r.Policy != PolicyExponential || r.MaxInterval != 15*time.Second || r.MaxRetries != -1 || r.Retries != MaxRetriesCap {
		t.Errorf("retryForever %+v", r)
	}
	if r := s.Retries["someOperation"]; r.MaxRetries != -1 || r.InitialInterval != 500*time.Millisecond || r.Multiplier != 1.5 {
		t.Errorf("someOperation defaults %+v", r)
	}
	if cb := s.CircuitBreakers["simpleCB"]; cb.MaxRequests != 1 || cb.Timeout != 30*time.Second || cb.Interval != 0 || cb.Trip.String() != "consecutiveFailures >= 5" {
		t.Errorf("simpleCB %+v", cb)
	}
	if got := s.Apps["appB"]; got != (PolicyNames{"general", "important", "simpleCB"}) {
		t.Errorf("appB %+v", got)
	}
	c := New(s)
	if !c.AppliesTo("app1") || c.AppliesTo("app3") {
		t.Error("scopes not applied")
	}
	set := c.For("appB", "default")
	if set == nil || set.Timeout != 5*time.Second || set.Retry.Name != "important" || set.Breaker == nil {
		t.Fatalf("appB set %+v", set)
	}
	if c.For("appC", "default") != nil {
		t.Error("appC has no policy and there are no defaults")
	}

	m, err := Parse("matching.yaml", []byte(daprMatchingExample))
	if err != nil {
		t.Fatal(err)
	}
	r := m.Retries["retry5xxOnly"]
	for _, tc := range []struct {
		status int
		want   bool
	}{{429, true}, {500, true}, {599, true}, {404, false}, {428, false}, {200, false}} {
		if got := r.MayRetryHTTP(tc.status, false); got != tc.want {
			t.Errorf("retry5xxOnly HTTP %d: %v, want %v", tc.status, got, tc.want)
		}
	}
	for _, tc := range []struct {
		code int
		want bool
	}{{0, false}, {1, true}, {4, true}, {5, false}, {8, true}, {11, true}, {12, false}, {13, true}, {14, true}, {15, false}} {
		if got := r.MayRetryGRPC(tc.code); got != tc.want {
			t.Errorf("retry5xxOnly gRPC %d: %v, want %v", tc.code, got, tc.want)
		}
	}
}

func TestDefaultResolution(t *testing.T) {
	s, err := Parse("defaults.yaml", []byte(daprDefaultsExample))
	if err != nil {
		t.Fatal(err)
	}
	c := New(s)
	// appA names only a retry: no timeout, no breaker (Dapr does not mix a
	// named target with defaults).
	a := c.For("appA", "default")
	if a == nil || a.Retry.Name != DefaultAppRetryPolicy || a.Timeout != 0 || a.Breaker != nil {
		t.Fatalf("appA %+v", a)
	}
	// Any other app: DefaultAppRetryPolicy beats DefaultRetryPolicy; the
	// timeout and breaker fall back to the Default*Policy ones.
	b := c.For("appB", "prod")
	if b == nil || b.Retry.Name != DefaultAppRetryPolicy || b.Timeout != 15*time.Second || b.Breaker == nil {
		t.Fatalf("appB %+v", b)
	}
	if b.Breaker.Policy().Name != DefaultCircuitBreakerPolicy {
		t.Errorf("breaker %s", b.Breaker.Policy().Name)
	}
	if c.For("appB", "prod") != b {
		t.Error("the Set of a target is not kept")
	}
	if c.For("appB", "other") == b {
		t.Error("two namespaces share one Set (and breaker)")
	}

	// Without DefaultAppRetryPolicy, DefaultRetryPolicy applies.
	s2, err := Parse("d2.yaml", []byte(`apiVersion: dapr.io/v1alpha1
kind: Resiliency
spec:
  policies:
    retries:
      DefaultRetryPolicy: {duration: 1s, maxRetries: 3}
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := New(s2).For("x", "default"); got == nil || got.Retry.Name != DefaultRetryPolicy || got.Retry.Duration != time.Second || got.Timeout != 0 || got.Breaker != nil {
		t.Fatalf("fallback %+v", got)
	}
}

func TestNamespacedTarget(t *testing.T) {
	doc := `apiVersion: dapr.io/v1alpha1
kind: Resiliency
spec:
  policies:
    timeouts: {short: 1s, long: 9s}
  targets:
    apps:
      orders: {timeout: long}
      orders.prod: {timeout: short}
`
	s, err := Parse("ns.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	c := New(s)
	if got := c.For("orders", "prod").Timeout; got != time.Second {
		t.Errorf("orders.prod: %v", got)
	}
	if got := c.For("orders", "default").Timeout; got != 9*time.Second {
		t.Errorf("orders.default: %v", got)
	}
}

func TestParseErrors(t *testing.T) {
	head := "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nspec:\n"
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"empty", "", "no Resiliency document"},
		{"kind", "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nspec: {}\n", `kind "Configuration"`},
		{"version", "apiVersion: dapr.io/v2\nkind: Resiliency\nspec: {}\n", `apiVersion "dapr.io/v2"`},
		{"no spec", "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\n", "no spec"},
		{"unknown top", head + "  policy: {}\n", `x.yaml:4: resiliency: spec: unknown field "policy"`},
		{"unknown retry field", head + "  policies:\n    retries:\n      r:\n        maxRetry: 3\n", `x.yaml:7: resiliency: retries.r: unknown field "maxRetry"`},
		{"bad duration", head + "  policies:\n    timeouts:\n      t: 5 seconds\n", `x.yaml:6: timeouts.t: resiliency: invalid duration "5 seconds"`},
		{"negative duration", head + "  policies:\n    timeouts:\n      t: -1s\n", "negative duration"},
		{"bad policy", head + "  policies:\n    retries:\n      r: {policy: linear}\n", `"linear", want constant or exponential`},
		{"maxRetries", head + "  policies:\n    retries:\n      r: {maxRetries: -2}\n", "want -1 (unlimited) or more"},
		{"maxRetries string", head + "  policies:\n    retries:\n      r: {maxRetries: three}\n", "want an integer"},
		{"codes range", head + "  policies:\n    retries:\n      r:\n        matching: {httpStatusCodes: \"500-600\"}\n", "x.yaml:7: retries.r.matching.httpStatusCodes: resiliency: status code 600 out of range [100, 599]"},
		{"grpc codes", head + "  policies:\n    retries:\n      r:\n        matching: {gRPCStatusCodes: \"17\"}\n", "status code 17 out of range [0, 16]"},
		{"matching unknown", head + "  policies:\n    retries:\n      r:\n        matching: {statusCodes: \"500\"}\n", `unknown field "statusCodes"`},
		{"trip typo", head + "  policies:\n    circuitBreakers:\n      cb: {trip: consecutiveFailure > 5}\n", "x.yaml:6: circuitBreakers.cb.trip: resiliency: trip \"consecutiveFailure > 5\""},
		{"trip not bool", head + "  policies:\n    circuitBreakers:\n      cb: {trip: consecutiveFailures + 5}\n", "want bool"},
		{"trip syntax", head + "  policies:\n    circuitBreakers:\n      cb: {trip: 'consecutiveFailures >'}\n", "trip"},
		{"maxRequests", head + "  policies:\n    circuitBreakers:\n      cb: {maxRequests: -1}\n", "want 0 or more"},
		{"missing timeout", head + "  targets:\n    apps:\n      a: {timeout: general}\n", `x.yaml:6: resiliency: targets.apps.a.timeout: no timeout policy "general"`},
		{"missing retry", head + "  targets:\n    apps:\n      a:\n        retry: r\n", `x.yaml:7: resiliency: targets.apps.a.retry: no retry policy "r"`},
		{"missing cb", head + "  targets:\n    components:\n      c: {outbound: {circuitBreaker: x}}\n", `no circuit breaker policy "x"`},
		{"bad app key", head + "  targets:\n    apps:\n      a.b.c: {}\n", `invalid app target "a.b.c"`},
		{"dup key", head + "  policies:\n    timeouts:\n      t: 1s\n      t: 2s\n", "duplicate key"},
		{"actor scope", head + "  targets:\n    actors:\n      x: {circuitBreakerScope: all}\n", `"all", want id, type or both`},
		{"yaml syntax", head + "  policies: [\n", "x.yaml: resiliency: yaml:"},
		{"multiplier", head + "  policies:\n    retries:\n      r: {multiplier: 0.5}\n", "want 1..100"},
		{"initial above max", head + "  policies:\n    retries:\n      r: {policy: exponential, initialInterval: 2m, maxInterval: 1m}\n", "initialInterval 2m0s is above maxInterval"},
		{"dup across docs", head + "  policies:\n    timeouts: {t: 1s}\n---\n" + head + "  policies:\n    timeouts: {t: 2s}\n", `x.yaml:11: resiliency: timeout policy "t" defined twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("x.yaml", []byte(tc.doc))
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{{"5s", 5 * time.Second, true}, {"1500", 1500 * time.Millisecond, true}, {"0", 0, true}, {"1m30s", 90 * time.Second, true},
		{"-5s", 0, false}, {"5", 5 * time.Millisecond, true}, {"x", 0, false}, {"99999999999999999", 0, false}} {
		got, err := ParseDuration(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseCodes(t *testing.T) {
	for _, tc := range []struct {
		s       string
		lo, hi  int
		in, out []int
		err     string
	}{
		{s: "429,500-599", lo: 100, hi: 599, in: []int{429, 500, 550, 599}, out: []int{428, 430, 499, 600, 0}},
		{s: " 500 - 502 , 504", lo: 100, hi: 599, in: []int{500, 501, 502, 504}, out: []int{503, 505}},
		{s: "1-4,8-11,13,14", lo: 0, hi: 16, in: []int{1, 2, 3, 4, 8, 11, 13, 14}, out: []int{0, 5, 7, 12, 15, 16}},
		{s: "0", lo: 0, hi: 16, in: []int{0}, out: []int{1}},
		{s: "", lo: 100, hi: 599, err: "empty status code list"},
		{s: "500,,502", lo: 100, hi: 599, err: "empty item"},
		{s: "599-500", lo: 100, hi: 599, err: "reversed"},
		{s: "99", lo: 100, hi: 599, err: "out of range"},
		{s: "5xx", lo: 100, hi: 599, err: "invalid status code"},
		{s: "+500", lo: 100, hi: 599, err: "invalid status code"},
		{s: "500-", lo: 100, hi: 599, err: "invalid status code"},
		{s: "500-502-504", lo: 100, hi: 599, err: "invalid status code"},
		{s: "1000", lo: 100, hi: 599, err: "invalid status code"},
	} {
		set, err := ParseCodes(tc.s, tc.lo, tc.hi)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseCodes(%q) error %v, want %q", tc.s, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseCodes(%q): %v", tc.s, err)
			continue
		}
		for _, c := range tc.in {
			if !set.Has(c) {
				t.Errorf("ParseCodes(%q) lacks %d", tc.s, c)
			}
		}
		for _, c := range tc.out {
			if set.Has(c) {
				t.Errorf("ParseCodes(%q) has %d", tc.s, c)
			}
		}
	}
}

func TestDefaultMatching(t *testing.T) {
	var none *Retry
	r := &Retry{}
	for _, tc := range []struct {
		status     int
		idempotent bool
		want       bool
	}{{500, true, true}, {503, true, true}, {501, true, false}, {500, false, false}, {404, true, false}, {429, true, false}, {200, true, false}} {
		if got := r.MayRetryHTTP(tc.status, tc.idempotent); got != tc.want {
			t.Errorf("default MayRetryHTTP(%d, %v) = %v", tc.status, tc.idempotent, got)
		}
		if none.MayRetryHTTP(tc.status, tc.idempotent) {
			t.Errorf("nil policy retries %d", tc.status)
		}
	}
	if r.MayRetryGRPC(14) {
		t.Error("gRPC retried without gRPCStatusCodes")
	}
	if !r.FailedGRPC(14) || !r.FailedGRPC(13) || r.FailedGRPC(5) || r.FailedGRPC(0) {
		t.Error("default gRPC failures")
	}
}

func TestBackoff(t *testing.T) {
	c := &Retry{Policy: PolicyConstant, Duration: 3 * time.Second}
	if c.Backoff(1) != 3*time.Second || c.Backoff(7) != 3*time.Second {
		t.Error("constant")
	}
	e := &Retry{Policy: PolicyExponential, InitialInterval: 100 * time.Millisecond, Multiplier: 2, RandomizationFactor: 0.5, MaxInterval: time.Second}
	for i := 0; i < 200; i++ {
		for n, base := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 5: time.Second, 60: time.Second} {
			got := e.Backoff(n)
			if got < base/2 || got > base*3/2 {
				t.Fatalf("Backoff(%d) = %v, want within ±50%% of %v", n, got, base)
			}
		}
	}
	e.RandomizationFactor = 0
	if e.Backoff(2) != 200*time.Millisecond {
		t.Error("no randomization")
	}
}

func TestBudget(t *testing.T) {
	b := &Budget{Ratio: 0.2, MinPerSecond: 1}
	now := time.Unix(1000, 0)
	// Minimum: 1/s over 10 s = 10 retries with no traffic.
	n := 0
	for b.TryRetry(now) {
		n++
		if n > 100 {
			t.Fatal("unbounded")
		}
	}
	if n != 10 {
		t.Fatalf("retries with no requests: %d, want 10", n)
	}
	for i := 0; i < 100; i++ {
		b.Request(now)
	}
	n = 0
	for b.TryRetry(now) {
		n++
	}
	if n != 20 {
		t.Fatalf("retries after 100 requests: %d, want 20", n)
	}
	// 11 s later the window has slid past all of it.
	later := now.Add(11 * time.Second)
	n = 0
	for b.TryRetry(later) {
		n++
	}
	if n != 10 {
		t.Fatalf("retries in a fresh window: %d, want 10", n)
	}
}

func TestDeadlineHeaders(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want time.Duration
		ok   bool
	}{{[]string{"2s"}, 2 * time.Second, true}, {[]string{"250"}, 250 * time.Millisecond, true}, {[]string{"0"}, 0, false},
		{[]string{"-1s"}, 0, false}, {[]string{"soon"}, 0, false}, {[]string{"1s", "2s"}, 0, false}, {nil, 0, false}} {
		got, ok := ParseTimeout(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseTimeout(%q) = %v, %v", tc.in, got, ok)
		}
	}
	if got := FormatTimeout(1500 * time.Millisecond); got != "1500ms" {
		t.Error(got)
	}
	if got := FormatTimeout(time.Microsecond); got != "1ms" {
		t.Error(got)
	}
	for d, want := range map[time.Duration]string{50 * time.Millisecond: "50000000n", 2 * time.Second: "2000000u", 30 * time.Minute: "1800000m", 0: "1n"} {
		if got := FormatGRPCTimeout(d); got != want {
			t.Errorf("FormatGRPCTimeout(%v) = %q, want %q", d, got, want)
		}
	}
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{{"100m", 100 * time.Millisecond, true}, {"5S", 5 * time.Second, true}, {"2H", 2 * time.Hour, true}, {"99999999n", 99999999, true},
		{"0u", 0, true}, {"1M", time.Minute, true}, {"7", 0, false}, {"m", 0, false}, {"", 0, false}, {"+5S", 0, false}, {"-5S", 0, false},
		{"123456789S", 0, false}, {"5s", 0, false}, {"1 m", 0, false}, {"5SS", 0, false},
		{"99999999H", math.MaxInt64, true}, {"2562047H", 2562047 * time.Hour, true}, {"99999999M", 99999999 * time.Minute, true}} {
		got, ok := ParseGRPCTimeout(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseGRPCTimeout(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestForAllocations(t *testing.T) {
	s, err := Parse("docs.yaml", []byte(daprDocsExample))
	if err != nil {
		t.Fatal(err)
	}
	c := New(s)
	c.For("appB", "default")
	c.For("appC", "default")
	var nilConfig *Config
	if n := testing.AllocsPerRun(1000, func() {
		_ = c.For("appB", "default")
		_ = c.For("appC", "default")
		_ = nilConfig.For("appB", "default")
	}); n != 0 {
		t.Errorf("For allocates %v times", n)
	}
	b := c.For("appB", "default").Breaker
	now := time.Now()
	if n := testing.AllocsPerRun(1000, func() {
		g, err := b.Allow(now)
		if err == nil {
			b.Done(g, true, now)
		}
	}); n != 0 {
		t.Errorf("breaker allocates %v times", n)
	}
	budget := NewBudget()
	if n := testing.AllocsPerRun(1000, func() { budget.Request(now); budget.TryRetry(now) }); n != 0 {
		t.Errorf("budget allocates %v times", n)
	}
}
