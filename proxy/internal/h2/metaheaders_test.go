package h2

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// metaBlock is the HPACK encoding of fields (a fresh encoder).
func metaBlock(fields ...string) []byte {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for i := 0; i+1 < len(fields); i += 2 {
		_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return b.Bytes()
}

// metaFrames writes a HEADERS frame on stream 1 carrying block, split into
// CONTINUATION frames of at most split bytes (0: no split).
func metaFrames(block []byte, split int, end bool) []byte {
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	first := block
	if split > 0 && len(block) > split {
		first = block[:split]
	}
	rest := block[len(first):]
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndStream: end, EndHeaders: len(rest) == 0})
	for len(rest) > 0 {
		n := min(split, len(rest))
		_ = fr.WriteContinuation(1, n == len(rest), rest[:n])
		rest = rest[n:]
	}
	return b.Bytes()
}

// metaReadAll reads every frame of data, summarised, with x/net's own
// header decoding (ref) or with metaReader.
func metaReadAll(data []byte, ref bool) []string {
	fr := http2.NewFramer(nil, bytes.NewReader(data))
	fr.MaxHeaderListSize = 1 << 10
	read := fr.ReadFrame
	if ref {
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	} else {
		read = newMetaReader(fr, hpack.NewDecoder(4096, nil)).readFrame
	}
	var out []string
	for range 64 {
		f, err := read()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				out = append(out, fmt.Sprintf("stream error %d %v %v", se.StreamID, se.Code, se.Cause))
				continue
			}
			return append(out, "error "+err.Error())
		}
		if mh, ok := f.(*http2.MetaHeadersFrame); ok {
			out = append(out, fmt.Sprintf("headers %d end=%v truncated=%v %q", mh.StreamID, mh.StreamEnded(), mh.Truncated, mh.Fields))
			continue
		}
		out = append(out, fmt.Sprintf("%T %d", f, f.Header().StreamID))
	}
	return out
}

var metaSeeds = [][]byte{
	metaFrames(metaBlock(":method", "POST", ":scheme", "http", ":path", "/a.B/C", ":authority", "x", "content-type", "application/grpc", "te", "trailers"), 0, false),
	metaFrames(metaBlock(":status", "200", "content-type", "application/grpc", "trailer", "grpc-status, grpc-message"), 7, false),
	metaFrames(metaBlock("grpc-status", "0", "grpc-message", ""), 0, true),
	metaFrames(metaBlock(":status", "200", "Upper", "x"), 0, true),
	metaFrames(metaBlock(":status", "200", "a", "x\x00y"), 0, true),
	metaFrames(metaBlock("a", "b", ":status", "200"), 0, true),
	metaFrames(metaBlock(":status", "200", ":status", "204"), 0, true),
	metaFrames(metaBlock(":status", "200", ":path", "/"), 0, true),
	metaFrames(metaBlock(":bogus", "1"), 0, true),
	metaFrames(metaBlock(":status", "200", "big", string(bytes.Repeat([]byte("v"), 1100))), 0, true),
	metaFrames(metaBlock(":status", "200", "trailer", string(bytes.Repeat([]byte("a,"), 600))), 0, true),
	metaFrames(bytes.Repeat(metaBlock("k", "v"), 40), 3, true),
	metaFrames([]byte{0xff, 0xff, 0xff, 0xff}, 0, true),
	metaFrames([]byte{0x3f, 0xe1, 0xff, 0x03}, 0, true), // table size update beyond the limit
}

// TestMetaReaderMatchesFramer: metaReader decodes header blocks, accepts,
// truncates and rejects them exactly as x/net's Framer with
// ReadMetaHeaders does.
func TestMetaReaderMatchesFramer(t *testing.T) {
	for i, data := range metaSeeds {
		two := append(append([]byte(nil), data...), data...)
		for _, in := range [][]byte{data, two} {
			want, got := metaReadAll(in, true), metaReadAll(in, false)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("seed %d:\n got %q\nwant %q", i, got, want)
			}
		}
	}
}

func FuzzMetaReader(f *testing.F) {
	for _, s := range metaSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		want, got := metaReadAll(data, true), metaReadAll(data, false)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %q\nwant %q", got, want)
		}
	})
}

// TestMetaReaderAllocs: a header block of fields already in the dynamic
// table costs no allocation beyond the Framer's HEADERS frame.
func TestMetaReaderAllocs(t *testing.T) {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	fields := []hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"}, {Name: "grpc-status", Value: "0"}, {Name: "x-meshd", Value: "v"}}
	for _, f := range fields {
		_ = enc.WriteField(f)
	}
	first := metaFrames(b.Bytes(), 0, false)
	b.Reset()
	for _, f := range fields {
		_ = enc.WriteField(f)
	}
	again := metaFrames(b.Bytes(), 0, false)
	rd := bytes.NewReader(first)
	fr := http2.NewFramer(nil, rd)
	m := newMetaReader(fr, hpack.NewDecoder(4096, nil))
	if _, err := m.readFrame(); err != nil {
		t.Fatal(err)
	}
	var f http2.Frame
	var err error
	allocs := testing.AllocsPerRun(100, func() {
		rd.Reset(again)
		f, err = m.readFrame()
	})
	if err != nil {
		t.Fatal(err)
	}
	if mh := f.(*http2.MetaHeadersFrame); !reflect.DeepEqual(mh.Fields, fields) {
		t.Fatalf("fields %v, want %v", mh.Fields, fields)
	}
	if allocs > 1 {
		t.Errorf("%v allocations per header block, want at most 1 (the HEADERS frame)", allocs)
	}
}
