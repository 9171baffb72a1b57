package proxy

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const testToken = "s3cret-token-0123456789"

// TestAPITokenCases: every token case on the HTTP handler of a sidecar
// that requires one; refused calls never reach routing.
func TestAPITokenCases(t *testing.T) {
	p, err := New(Config{Identity: mustIdentity(t, "frontend"), Resolver: newResolver(), Insecure: true, APIToken: testToken})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, method, target string
		header               http.Header
		want                 int // status; 404/503: routing reached (no app id / unknown app)
	}{
		{"missing", "GET", "/v1.0/invoke/orders/method/x", nil, 401},
		{"wrong", "GET", "/v1.0/invoke/orders/method/x", http.Header{"Dapr-Api-Token": {"nope"}}, 401},
		{"prefix", "GET", "/v1.0/invoke/orders/method/x", http.Header{"Dapr-Api-Token": {testToken[:5]}}, 401},
		{"longer", "GET", "/v1.0/invoke/orders/method/x", http.Header{"Dapr-Api-Token": {testToken + "0"}}, 401},
		{"empty", "GET", "/v1.0/invoke/orders/method/x", http.Header{"Dapr-Api-Token": {""}}, 401},
		{"twice", "GET", "/v1.0/invoke/orders/method/x", http.Header{"Dapr-Api-Token": {testToken, testToken}}, 401},
		{"case differs", "GET", "/v1.0/invoke/orders/method/x", http.Header{"Dapr-Api-Token": {strings.ToUpper(testToken)}}, 401},
		{"right", "GET", "/v1.0/invoke/orders/method/x", http.Header{"Dapr-Api-Token": {testToken}}, 503},
		{"healthz", "GET", "/v1.0/healthz", nil, 204},
		{"healthz HEAD", "HEAD", "/v1.0/healthz", nil, 204},
		{"healthz/outbound", "GET", "/v1.0/healthz/outbound", nil, 204},
		{"healthz/app", "GET", "/v1.0/healthz/app", nil, 204},
		{"healthz POST", "POST", "/v1.0/healthz", nil, 401},
		{"healthz as a call", "GET", "/v1.0/healthz", http.Header{"Dapr-App-Id": {"orders"}}, 401},
		{"healthz in proxy form", "GET", "http://orders/v1.0/healthz", nil, 401},
		{"metadata", "GET", "/v1.0/metadata", nil, 401},
		{"no app id, right token", "GET", "/x", http.Header{"Dapr-Api-Token": {testToken}}, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.target, nil)
			for k, v := range tc.header {
				r.Header[k] = v
			}
			w := httptest.NewRecorder()
			p.HTTPHandler().ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Fatalf("%d %s, want %d", w.Code, w.Body, tc.want)
			}
			if _, ok := r.Header["Dapr-Api-Token"]; ok {
				t.Error("the token header is still on the request")
			}
			if tc.want == 401 {
				var e errorBody
				if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.ErrorCode != ErrCodeAPIToken || strings.Contains(w.Body.String(), testToken[:6]) {
					t.Errorf("body %s: want ERR_API_TOKEN, without the token", w.Body)
				}
			}
		})
	}
}

// TestAPITokenNoAllocs: the check of a right token allocates nothing.
func TestAPITokenNoAllocs(t *testing.T) {
	p, err := New(Config{Identity: mustIdentity(t, "frontend"), Resolver: newResolver(), Insecure: true, APIToken: testToken})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/v1.0/invoke/orders/method/x", nil)
	v := []string{testToken}
	w := httptest.NewRecorder()
	if n := testing.AllocsPerRun(1000, func() {
		r.Header["Dapr-Api-Token"] = v
		if !p.checkAPIToken(w, r, false) {
			t.Fatal("refused")
		}
	}); n != 0 {
		t.Errorf("%v allocations per check, want 0", n)
	}
}

// BenchmarkAPIToken is the per-call cost of the token check (right token).
func BenchmarkAPIToken(b *testing.B) {
	p, err := New(Config{Identity: mustIdentity(b, "frontend"), Resolver: newResolver(), Insecure: true, APIToken: testToken})
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/v1.0/invoke/orders/method/x", nil)
	v := []string{testToken}
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		r.Header["Dapr-Api-Token"] = v
		p.checkAPIToken(w, r, false)
	}
}
