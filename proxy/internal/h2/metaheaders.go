package h2

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// metaReader decodes a HEADERS frame and its CONTINUATION frames into a
// MetaHeadersFrame, as x/net's Framer does with ReadMetaHeaders set, with
// the same limits and errors, but reusing per connection what the
// Framer allocates per header block: the frame, its field slice and the
// decoder's emit callback. The frame it returns is valid until the next
// readFrame; the reader goroutine handles it before reading on.
type metaReader struct {
	fr   *http2.Framer
	dec  *hpack.Decoder
	emit func(hpack.HeaderField) // m.onField, bound once

	mh      http2.MetaHeadersFrame
	fields  []hpack.HeaderField
	headers uint32 // header list budget left
	trailer uint32 // budget of the names a trailer field declares
	regular bool   // a regular field was seen
	invalid error  // first invalid field
}

func newMetaReader(fr *http2.Framer, dec *hpack.Decoder) *metaReader {
	m := &metaReader{fr: fr, dec: dec}
	m.emit = m.onField
	return m
}

var (
	errPseudoAfterRegular   = errors.New("pseudo header field after regular")
	errMixPseudoHeaderTypes = errors.New("mix of request and response pseudo headers")
)

// readFrame reads the next frame; a HEADERS frame comes back decoded, with
// its CONTINUATION frames, as a *http2.MetaHeadersFrame.
func (m *metaReader) readFrame() (http2.Frame, error) {
	f, err := m.fr.ReadFrame()
	if err != nil {
		return nil, err
	}
	if hf, ok := f.(*http2.HeadersFrame); ok {
		return m.read(hf)
	}
	return f, nil
}

func (m *metaReader) maxList() uint32 {
	if m.fr.MaxHeaderListSize == 0 {
		return 16 << 20 // the Framer's default
	}
	return m.fr.MaxHeaderListSize
}

func (m *metaReader) onField(hf hpack.HeaderField) {
	if !httpguts.ValidHeaderFieldValue(hf.Value) {
		// The value stays out of the error: it may be sensitive.
		m.invalid = fmt.Errorf("invalid header field value for %q", hf.Name)
	}
	if strings.HasPrefix(hf.Name, ":") {
		if m.regular {
			m.invalid = errPseudoAfterRegular
		}
	} else {
		m.regular = true
		if !validWireName(hf.Name) {
			m.invalid = fmt.Errorf("invalid header field name %q", hf.Name)
		}
	}
	if m.invalid != nil {
		m.dec.SetEmitEnabled(false)
		return
	}
	left := &m.headers
	var size uint32
	if hf.Name == "trailer" {
		left = &m.trailer
		n := strings.Count(hf.Value, ",") + 1
		size = uint32(len(hf.Value)-n+1) + uint32(n)*hpack.HeaderField{}.Size()
	} else {
		size = hf.Size()
	}
	if size > *left {
		m.dec.SetEmitEnabled(false)
		m.mh.Truncated = true
		m.headers, m.trailer = 0, 0
		return
	}
	*left -= size
	m.fields = append(m.fields, hf)
}

func (m *metaReader) read(hf *http2.HeadersFrame) (http2.Frame, error) {
	limit := m.maxList()
	m.mh = http2.MetaHeadersFrame{HeadersFrame: hf}
	clear(m.fields) // drop the last block's strings
	m.fields = m.fields[:0]
	m.headers, m.trailer, m.regular, m.invalid = limit, limit, false, nil
	d := m.dec
	d.SetEmitEnabled(true)
	d.SetMaxStringLength(int(limit))
	d.SetEmitFunc(m.emit)

	var hc headerBlock = hf
	for {
		frag := hc.HeaderBlockFragment()
		// Far over the limit (more than twice what is left, or any
		// CONTINUATION once over it) or after an invalid field: the
		// connection ends rather than decoding more.
		if int64(len(frag)) > 2*int64(m.headers+m.trailer) || m.invalid != nil {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if _, err := d.Write(frag); err != nil {
			return nil, http2.ConnectionError(http2.ErrCodeCompression)
		}
		if hc.HeadersEnded() {
			break
		}
		f, err := m.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		hc = f.(*http2.ContinuationFrame) // the Framer checks the frame order
	}
	if err := d.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	m.mh.Fields = m.fields
	if m.invalid != nil {
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: m.invalid}
	}
	if err := checkPseudos(m.fields); err != nil {
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: err}
	}
	return &m.mh, nil
}

// headerBlock is a HEADERS or a CONTINUATION frame.
type headerBlock interface {
	HeaderBlockFragment() []byte
	HeadersEnded() bool
}

// checkPseudos checks the pseudo-header fields (they come first): known
// names, no duplicates, not both request and response ones.
func checkPseudos(fields []hpack.HeaderField) error {
	var req, resp bool
	for i, hf := range fields {
		if !hf.IsPseudo() {
			break
		}
		switch hf.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			req = true
		case ":status":
			resp = true
		default:
			return fmt.Errorf("invalid pseudo-header %q", hf.Name)
		}
		for _, prev := range fields[:i] {
			if prev.Name == hf.Name {
				return fmt.Errorf("duplicate pseudo-header %q", hf.Name)
			}
		}
	}
	if req && resp {
		return errMixPseudoHeaderTypes
	}
	return nil
}

// validWireName reports whether v is a valid HTTP/2 field name: token
// characters, no uppercase.
func validWireName(v string) bool {
	if v == "" {
		return false
	}
	for _, r := range v {
		if !httpguts.IsTokenRune(r) || 'A' <= r && r <= 'Z' {
			return false
		}
	}
	return true
}
