package h2

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// fieldFlags maps each field to whether it came as a literal the decoder
// must not index.
func fieldFlags(fields []hpack.HeaderField) map[string]bool {
	m := map[string]bool{}
	for _, hf := range fields {
		m[hf.Name] = hf.Sensitive
	}
	return m
}

// A value that changes on every call (the trace context the sidecar sends
// back) leaves the server as a literal that neither side indexes, so it
// does not churn the connection's dynamic tables; fields that repeat stay
// indexed (later answers refer to them by index: smaller blocks).
func TestServerVolatileFieldsUnindexed(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Traceparent", r.Header.Get("Traceparent"))
		w.Header().Set("X-Kind", "same-on-every-answer")
		w.Header().Set("Date", "Sun, 06 Dec 2026 20:00:00 GMT")
		w.WriteHeader(http.StatusOK)
	})
	ts := srvStart(t, h, false, nil)
	rc := srvDialRaw(t, ts.addr)
	rc.fr.ReadMetaHeaders = nil // raw HEADERS: the block's size is read too
	dec := hpack.NewDecoder(4096, nil)
	var sizes []int
	for i := range 3 {
		id := uint32(1 + 2*i)
		tp := fmt.Sprintf("00-0af7651916cd43dd8448eb211c80319c-%016x-01", i+1)
		rc.request(id, true, "GET", "traceparent", tp)
		var block []byte
		for block == nil {
			f := rc.next(5 * time.Second)
			if f == nil {
				t.Fatal("connection ended before the answer")
			}
			if hf, ok := f.(*http2.HeadersFrame); ok && hf.StreamID == id {
				if !hf.HeadersEnded() {
					t.Fatal("answer split into CONTINUATION frames")
				}
				block = append([]byte{}, hf.HeaderBlockFragment()...)
			}
		}
		fields, err := dec.DecodeFull(block)
		if err != nil {
			t.Fatal(err)
		}
		flags := fieldFlags(fields)
		if !flags["traceparent"] {
			t.Errorf("answer %d: traceparent indexed (fields %v)", i, fields)
		}
		if flags["x-kind"] || flags["date"] || flags[":status"] {
			t.Errorf("answer %d: a repeating field left unindexed: %v", i, fields)
		}
		found := false
		for _, hf := range fields {
			if hf.Name == "traceparent" {
				found = hf.Value == tp
			}
		}
		if !found {
			t.Errorf("answer %d: traceparent not %q: %v", i, tp, fields)
		}
		sizes = append(sizes, len(block))
	}
	// x-kind and date with their values are ~45 bytes as literals, one
	// byte each once indexed.
	if sizes[1] > sizes[0]-30 || sizes[2] > sizes[0]-30 {
		t.Errorf("header block sizes %v: want the repeating fields indexed after the first answer", sizes)
	}
}

// The client sends a call's trace context and deadline as literals that
// are not indexed; its other fields as usual.
func TestClientVolatileFieldsUnindexed(t *testing.T) {
	got := make(chan *http2.MetaHeadersFrame, 2)
	tr, url := clientScript(t, func(n int, fr *http2.Framer, c net.Conn) {
		for range 2 {
			h := clientNextHeaders(fr)
			if h == nil {
				return
			}
			got <- h
			clientAnswer(fr, h.StreamID, "ok")
		}
		clientDrain(fr)
	})
	for i := range 2 {
		req, err := http.NewRequest("POST", url+"/svc/Method", http.NoBody)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Traceparent", fmt.Sprintf("00-0af7651916cd43dd8448eb211c80319c-%016x-01", i+1))
		req.Header.Set("Grpc-Timeout", fmt.Sprintf("%du", 99000+i))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		h := <-got
		flags := fieldFlags(h.Fields)
		if !flags["traceparent"] || !flags["grpc-timeout"] {
			t.Errorf("request %d: volatile fields indexed: %v", i, h.Fields)
		}
		if flags["content-type"] || flags[":path"] {
			t.Errorf("request %d: a repeating field left unindexed: %v", i, h.Fields)
		}
	}
}

func TestUnindexed(t *testing.T) {
	for _, name := range []string{"traceparent", "grpc-timeout", "authorization", "x-request-id"} {
		if hf := hpackField(name, "v"); !hf.Sensitive {
			t.Errorf("%s indexed", name)
		}
	}
	for _, name := range []string{":status", "content-type", "date", "tracestate", "grpc-status", "Traceparent"} {
		if hf := hpackField(name, "v"); hf.Sensitive {
			t.Errorf("%s not indexed", name)
		}
	}
}

// BenchmarkHPACKAnswer encodes a unary gRPC answer's header and trailer
// blocks as the sidecar sends them (a new trace context each call) and
// decodes them as the peer does: "indexed" puts every field in the
// dynamic tables, "hpackField" is what the encoders do.
func BenchmarkHPACKAnswer(b *testing.B) {
	for _, v := range []struct {
		name  string
		field func(name, value string) hpack.HeaderField
	}{
		{"indexed", func(n, v string) hpack.HeaderField { return hpack.HeaderField{Name: n, Value: v} }},
		{"hpackField", hpackField},
	} {
		b.Run(v.name, func(b *testing.B) {
			var buf bytes.Buffer
			enc := hpack.NewEncoder(&buf)
			dec := hpack.NewDecoder(4096, func(hpack.HeaderField) {})
			tps := make([]string, 1024)
			for i := range tps {
				tps[i] = fmt.Sprintf("00-0af7651916cd43dd8448eb211c80319c-%016x-01", i*7919+1)
			}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				buf.Reset()
				_ = enc.WriteField(v.field(":status", "200"))
				_ = enc.WriteField(v.field("content-type", "application/grpc"))
				_ = enc.WriteField(v.field("traceparent", tps[i%len(tps)]))
				_ = enc.WriteField(v.field("date", "Sun, 06 Dec 2026 20:00:00 GMT"))
				if _, err := dec.Write(buf.Bytes()); err != nil {
					b.Fatal(err)
				}
				buf.Reset()
				_ = enc.WriteField(v.field("grpc-status", "0"))
				_ = enc.WriteField(v.field("grpc-message", ""))
				if _, err := dec.Write(buf.Bytes()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
