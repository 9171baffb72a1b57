package h1

import (
	"net/http"
	"testing"
)

// TestAdoptHeader: a handler passing an answer's header map on hands it to
// the Server's writer when its own header was never asked for, and the
// client gets those headers; once the handler has asked for its header (or
// written), adoption is refused and the map it holds stays the one written.
func TestAdoptHeader(t *testing.T) {
	addr, _ := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := http.Header{"X-From": {"upstream"}, "Content-Type": {"text/plain"}}
		switch r.URL.Path {
		case "/adopt":
			if !w.(*response).AdoptHeader(up) {
				t.Error("AdoptHeader refused a fresh writer")
			}
			w.Header()["X-After"] = []string{"1"} // the adopted map is w's now
		case "/asked":
			w.Header()["X-Own"] = []string{"1"}
			h := w.Header()
			if w.(*response).AdoptHeader(up) {
				t.Error("AdoptHeader replaced a header map the handler holds")
			}
			h["X-Late"] = []string{"1"}
		case "/written":
			w.WriteHeader(http.StatusAccepted)
			if w.(*response).AdoptHeader(up) {
				t.Error("AdoptHeader after WriteHeader")
			}
			return
		}
		_, _ = w.Write([]byte("ok"))
	}), nil)
	c := dialRaw(t, addr)
	for _, tc := range []struct {
		path      string
		want, not []string
	}{
		{"/adopt", []string{"X-From", "Content-Type", "X-After"}, nil},
		{"/asked", []string{"X-Own", "X-Late"}, []string{"X-From"}},
		{"/written", nil, []string{"X-From"}},
	} {
		c.send("GET " + tc.path + " HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, _ := c.read("GET")
		for _, k := range tc.want {
			if resp.Header.Get(k) == "" {
				t.Errorf("%s: no %s in the answer: %v", tc.path, k, resp.Header)
			}
		}
		for _, k := range tc.not {
			if resp.Header.Get(k) != "" {
				t.Errorf("%s: %s in the answer: %v", tc.path, k, resp.Header)
			}
		}
	}
}
