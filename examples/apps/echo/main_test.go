package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEcho(t *testing.T) {
	srv := httptest.NewServer(newHandler("e1"))
	defer srv.Close()
	body := "hello"
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/a/b/../c?x=1&y=2", strings.NewReader(body))
	req.Header.Set("dapr-caller-app-id", "front")
	req.Header.Set("dapr-caller-namespace", "default")
	req.Header.Set("dapr-callee-app-id", "echo")
	req.Header.Set("X-Thing", "t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got Request
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(body))
	want := Request{Name: "e1", Method: "PUT", Path: "/a/b/../c", RawQuery: "x=1&y=2", BodyLength: 5,
		BodySHA256: hex.EncodeToString(sum[:]), CallerAppID: "front", CallerNamespace: "default", CalleeAppID: "echo"}
	if got.Name != want.Name || got.Method != want.Method || got.Path != want.Path || got.RawQuery != want.RawQuery ||
		got.BodyLength != want.BodyLength || got.BodySHA256 != want.BodySHA256 || got.CallerAppID != want.CallerAppID ||
		got.CallerNamespace != want.CallerNamespace || got.CalleeAppID != want.CalleeAppID {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if got.Headers["X-Thing"][0] != "t" {
		t.Errorf("headers = %v", got.Headers)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHealthToggle(t *testing.T) {
	srv := httptest.NewServer(newHandler("e1"))
	defer srv.Close()
	for _, step := range []struct {
		path string
		want int
	}{
		{"/healthz", 200}, {"/admin/fail", 200}, {"/healthz", 503}, {"/admin/recover", 200}, {"/healthz", 200},
	} {
		if code, body := get(t, srv.URL+step.path); code != step.want {
			t.Fatalf("%s = %d %s, want %d", step.path, code, body, step.want)
		}
	}
}

func TestStatusDownloadUpload(t *testing.T) {
	srv := httptest.NewServer(newHandler("e1"))
	defer srv.Close()
	for _, tc := range []struct {
		path string
		code int
	}{
		{"/status/418", 418}, {"/status/503", 503}, {"/status/200", 200},
		{"/status/abc", 400}, {"/status/99", 400}, {"/download?bytes=-1", 400}, {"/download", 400},
		{"/sse?n=x", 400}, {"/sleep?d=x", 400}, {"/sleep?d=2m", 400}, {"/sleep?d=-1s", 400}, {"/sleep?d=10ms", 200},
	} {
		if code, body := get(t, srv.URL+tc.path); code != tc.code {
			t.Errorf("%s = %d %s, want %d", tc.path, code, body, tc.code)
		}
	}
	code, body := get(t, srv.URL+"/download?bytes=100000")
	if code != 200 || len(body) != 100000 || body[257] != 1 {
		t.Errorf("download: %d, %d bytes", code, len(body))
	}
	data := strings.Repeat("x", 1<<20)
	resp, err := http.Post(srv.URL+"/upload", "application/octet-stream", strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var up struct {
		Bytes  int64  `json:"bytes"`
		SHA256 string `json:"sha256"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&up)
	sum := sha256.Sum256([]byte(data))
	if up.Bytes != 1<<20 || up.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("upload = %+v", up)
	}
}

func TestSSE(t *testing.T) {
	srv := httptest.NewServer(newHandler("e1"))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/sse?n=3&interval=10ms")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q", ct)
	}
	var ids []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if id, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
			ids = append(ids, id)
		}
	}
	if strings.Join(ids, ",") != "0,1,2" {
		t.Errorf("event ids = %v", ids)
	}
}

// TestRecord: --record appends one line per request that carries a
// Chaos-Id, before the answer; requests without one are not recorded; an
// id cannot smuggle a line break or a field separator.
func TestRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rec")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := &app{name: "e1", record: f}
	for _, c := range []struct{ method, id string }{{"POST", "a-1"}, {"GET", ""}, {"GET", "b 2\nx"}} {
		r := httptest.NewRequest(c.method, "/x", nil)
		if c.id != "" {
			r.Header.Set(HeaderChaosID, c.id)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 {
			t.Fatalf("%s %q: %d", c.method, c.id, w.Code)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := "a-1 POST e1\nb_2_x GET e1\n"; string(b) != want {
		t.Fatalf("record = %q, want %q", b, want)
	}
}
