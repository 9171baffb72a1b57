package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// bufReader is a body that tells what it holds: final says whether the
// end is there.
type bufReader struct {
	r     *strings.Reader
	final bool
}

func (b *bufReader) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1] // a chunk per Read
	}
	return b.r.Read(p)
}
func (b *bufReader) Close() error                  { return nil }
func (b *bufReader) Buffered() (n int, final bool) { return b.r.Len(), b.final }

// TestSealableBodyBuffered: Buffered passes through sealableBody and
// recordingBody without reading, so the seal rule is unchanged.
func TestSealableBodyBuffered(t *testing.T) {
	b := &sealableBody{r: &bufReader{r: strings.NewReader("abc"), final: true}}
	if n, final := b.Buffered(); n != 3 || !final {
		t.Fatalf("Buffered = %d, %v; want 3, true", n, final)
	}
	if !b.seal() {
		t.Fatal("Buffered counted as a read: the body cannot be handed on")
	}
	if n, final := b.Buffered(); n != 0 || final {
		t.Fatalf("sealed: Buffered = %d, %v; want 0, false", n, final)
	}
	rb := newRecordingBody(&bufReader{r: strings.NewReader("xy"), final: true})
	if n, final := rb.Buffered(); n != 2 || !final {
		t.Fatalf("recordingBody: Buffered = %d, %v", n, final)
	}
	if got, _ := io.ReadAll(rb); string(got) != "xy" {
		t.Fatalf("read %q", got)
	}
	if buf, ok := rb.replay(); !ok || string(buf) != "xy" {
		t.Fatalf("replay %q %v", buf, ok)
	}
	plain := &sealableBody{r: strings.NewReader("abc")}
	if n, final := plain.Buffered(); n != 0 || final {
		t.Fatalf("a body that cannot tell: %d, %v", n, final)
	}
}

type flushCounter struct {
	*httptest.ResponseRecorder
	flushes int
}

func (f *flushCounter) Flush() { f.flushes++ }

// TestCopyResponseSkipsFlushWhenFinal: a streamed answer whose end is
// already there is not flushed chunk by chunk; one still arriving is.
func TestCopyResponseSkipsFlushWhenFinal(t *testing.T) {
	for _, final := range []bool{true, false} {
		w := &flushCounter{ResponseRecorder: httptest.NewRecorder()}
		resp := &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: -1,
			Body: &bufReader{r: strings.NewReader("abc"), final: final}, Trailer: http.Header{"Grpc-Status": {"0"}}}
		copyResponse(w, resp)
		if w.Body.String() != "abc" || w.Header().Get(http.TrailerPrefix+"Grpc-Status") != "0" {
			t.Fatalf("final=%v: body %q, header %v", final, w.Body.String(), w.Header())
		}
		want := 3
		if final {
			want = 0
		}
		if w.flushes != want {
			t.Errorf("final=%v: %d flushes, want %d", final, w.flushes, want)
		}
	}
}
