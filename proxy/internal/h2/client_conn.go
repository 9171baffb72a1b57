package h2

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// clientPreface is what a client sends first (RFC 9113 3.4).
const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Protocol defaults until the server's SETTINGS say otherwise.
const (
	clientInitialWindow        = 65535
	clientInitialMaxConcurrent = 100
	clientMaxWindow            = 1<<31 - 1
	clientLastStreamID         = 1<<31 - 1
)

// clientConn is one HTTP/2 connection to a server.
type clientConn struct {
	t    *Transport
	addr string
	nc   net.Conn
	raw  net.Conn // under TLS, the TCP connection (hard close)
	tls  *tls.ConnectionState
	br   *bufio.Reader
	fr   *http2.Framer // reads: the reader goroutine only; writes: under wmu
	meta *metaReader   // decodes header blocks read from fr

	// wmu serializes writes: bw, fr's write side, henc, hbuf, and each
	// stream's wclosed.
	wmu  sync.Mutex
	bw   *bufio.Writer
	henc *hpack.Encoder
	hbuf bytes.Buffer
	werr error // first write error: the connection is broken

	mu             sync.Mutex
	cond           sync.Cond // on mu: the send windows grew, or a stream ended
	streams        map[uint32]*clientStream
	nextID         uint32
	reserved       int
	maxConcurrent  uint32
	goAway         bool   // no new streams (GOAWAY received, or IDs spent)
	goAwayID       uint32 // a GOAWAY's last stream ID
	closed         bool
	err            error // why closed
	sendWindow     int32 // the connection's send window
	initialWindow  int32 // the peer's SETTINGS_INITIAL_WINDOW_SIZE
	maxFrame       uint32
	peerMaxHeaders uint32 // the peer's SETTINGS_MAX_HEADER_LIST_SIZE (0: none)
	inflow         int32  // what the peer may still send on the connection
	unsent         int32  // consumed, not yet given back by WINDOW_UPDATE
	idleSince      time.Time
	idleTimer      *time.Timer

	frames   atomic.Uint64 // frames read: Keepalive's sign of life
	killed   atomic.Bool   // closed by Keepalive
	kaTimer  *time.Timer
	kaSeen   uint64 // the keepalive timer's own state
	kaPinged bool
}

// newClientConn starts HTTP/2 on nc: preface, SETTINGS, the connection's
// window, and the reader goroutine.
func (t *Transport) newClientConn(nc net.Conn, addr string) (*clientConn, error) {
	cc := &clientConn{
		t: t, addr: addr, nc: nc, raw: nc,
		streams:       map[uint32]*clientStream{},
		nextID:        1,
		maxConcurrent: clientInitialMaxConcurrent,
		sendWindow:    clientInitialWindow,
		initialWindow: clientInitialWindow,
		maxFrame:      16 << 10,
		inflow:        t.connWindow(),
		idleSince:     time.Now(),
	}
	cc.cond.L = &cc.mu
	if tc, ok := nc.(*tls.Conn); ok {
		st := tc.ConnectionState()
		cc.tls = &st
		cc.raw = tc.NetConn()
		if st.NegotiatedProtocol != "h2" {
			_ = nc.Close()
			return nil, fmt.Errorf("h2: %s negotiated %q, not h2", addr, st.NegotiatedProtocol)
		}
	}
	cc.br = bufio.NewReaderSize(nc, 32<<10)
	cc.bw = bufio.NewWriterSize(nc, 32<<10)
	cc.fr = http2.NewFramer(cc.bw, cc.br)
	cc.fr.SetMaxReadFrameSize(t.frameSize())
	cc.fr.MaxHeaderListSize = t.maxHeader()
	cc.meta = newMetaReader(cc.fr, hpack.NewDecoder(4096, nil))
	cc.fr.SetReuseFrames()
	cc.henc = hpack.NewEncoder(&cc.hbuf)

	_, _ = cc.bw.WriteString(clientPreface)
	_ = cc.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(t.streamWindow())},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: t.frameSize()},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: t.maxHeader()},
	)
	if d := t.connWindow() - clientInitialWindow; d > 0 {
		_ = cc.fr.WriteWindowUpdate(0, uint32(d))
	}
	if err := cc.bw.Flush(); err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("h2: write preface to %s: %w", addr, err)
	}
	// The server's SETTINGS first: its stream limit and windows hold
	// before any stream is opened.
	wait := 10 * time.Second
	if t.Keepalive > 0 {
		wait = t.Keepalive + t.keepaliveTimeout()
	}
	_ = nc.SetReadDeadline(time.Now().Add(wait))
	f, err := cc.meta.readFrame()
	_ = nc.SetReadDeadline(time.Time{})
	if err == nil {
		if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
			err = cc.connError(http2.ErrCodeProtocol, "first frame not SETTINGS")
		} else {
			err = cc.onSettings(sf)
		}
	}
	if err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("h2: read the SETTINGS of %s: %w", addr, err)
	}
	cc.frames.Add(1)
	if t.Keepalive > 0 {
		cc.kaTimer = time.AfterFunc(t.Keepalive, cc.keepaliveTick)
	}
	cc.idleTimer = time.AfterFunc(t.idleTimeout(), cc.idleTick)
	go cc.readLoop()
	return cc, nil
}

// reserve takes a stream slot on cc, false if it has none free or takes no
// new streams.
func (cc *clientConn) reserve() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.closed || cc.goAway || uint32(len(cc.streams)+cc.reserved) >= cc.maxConcurrent {
		return false
	}
	cc.reserved++
	return true
}

// allowsNone reports whether the server allows no stream on cc.
func (cc *clientConn) allowsNone() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.maxConcurrent == 0 && !cc.closed
}

// keepaliveTick runs on Keepalive's timer: a PING after Keepalive of
// silence, and the connection closed when KeepaliveTimeout passes with
// nothing read after it.
func (cc *clientConn) keepaliveTick() {
	cc.mu.Lock()
	closed := cc.closed
	cc.mu.Unlock()
	if closed {
		return
	}
	n := cc.frames.Load()
	if n != cc.kaSeen {
		cc.kaSeen, cc.kaPinged = n, false
		cc.kaTimer.Reset(cc.t.Keepalive)
		return
	}
	if !cc.kaPinged {
		cc.kaPinged = true
		// A writer stuck on a peer that does not read holds wmu: then
		// the PING is not sent, and silence for KeepaliveTimeout still
		// ends the connection.
		if cc.wmu.TryLock() {
			var data [8]byte
			data[0] = 'k'
			if cc.werr == nil {
				if err := cc.fr.WritePing(false, data); err == nil {
					cc.flushLocked()
				}
			}
			cc.wmu.Unlock()
		}
		cc.kaTimer.Reset(cc.t.keepaliveTimeout())
		return
	}
	cc.killed.Store(true)
	_ = cc.raw.Close() // the reader fails: ErrPeerUnresponsive
}

// idleTick closes cc once it carried no stream for IdleTimeout.
func (cc *clientConn) idleTick() {
	idle := cc.t.idleTimeout()
	cc.mu.Lock()
	if cc.closed {
		cc.mu.Unlock()
		return
	}
	if len(cc.streams) > 0 || cc.reserved > 0 {
		cc.idleTimer.Reset(idle)
		cc.mu.Unlock()
		return
	}
	if left := idle - time.Since(cc.idleSince); left > 0 {
		cc.idleTimer.Reset(left)
		cc.mu.Unlock()
		return
	}
	cc.mu.Unlock()
	cc.closeIfIdle()
}

// closeIfIdle closes cc (GOAWAY, then close) if it carries no stream.
func (cc *clientConn) closeIfIdle() {
	cc.mu.Lock()
	if cc.closed || len(cc.streams) > 0 || cc.reserved > 0 {
		cc.mu.Unlock()
		return
	}
	cc.goAway = true
	cc.mu.Unlock()
	cc.wmu.Lock()
	if cc.werr == nil {
		_ = cc.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		cc.flushLocked()
	}
	cc.wmu.Unlock()
	cc.closeWith(ErrConnClosed)
}

// flushLocked flushes bw (wmu held); a failure breaks the connection.
func (cc *clientConn) flushLocked() {
	if err := cc.bw.Flush(); err != nil && cc.werr == nil {
		cc.werr = err
		_ = cc.raw.Close()
	}
}

// writeErrLocked records a failed frame write (wmu held).
func (cc *clientConn) writeErrLocked(err error) {
	if cc.werr == nil {
		cc.werr = err
		_ = cc.raw.Close()
	}
}

// closeWith closes cc and fails its streams with err.
func (cc *clientConn) closeWith(err error) {
	cc.mu.Lock()
	if cc.closed {
		cc.mu.Unlock()
		return
	}
	cc.closed = true
	cc.err = err
	streams := make([]*clientStream, 0, len(cc.streams))
	for _, cs := range cc.streams {
		streams = append(streams, cs)
	}
	cc.streams = map[uint32]*clientStream{}
	cc.cond.Broadcast()
	cc.mu.Unlock()
	cc.t.forget(cc)
	if cc.kaTimer != nil {
		cc.kaTimer.Stop()
	}
	cc.idleTimer.Stop()
	_ = cc.raw.Close()
	for _, cs := range streams {
		cs.fail(err, false)
	}
}

// connError ends cc for a protocol violation of the peer: GOAWAY with code.
func (cc *clientConn) connError(code http2.ErrCode, why string) error {
	cc.wmu.Lock()
	if cc.werr == nil {
		_ = cc.fr.WriteGoAway(0, code, []byte(why))
		cc.flushLocked()
	}
	cc.wmu.Unlock()
	return fmt.Errorf("%w: %s (%v)", ErrProtocol, why, code)
}

// readLoop reads every frame of cc until the connection fails.
func (cc *clientConn) readLoop() {
	err := cc.readFrames()
	if cc.killed.Load() {
		err = fmt.Errorf("%w (%s)", ErrPeerUnresponsive, cc.addr)
	} else if !errors.Is(err, ErrProtocol) {
		cc.mu.Lock()
		idle := len(cc.streams) == 0
		cc.mu.Unlock()
		if errors.Is(err, io.EOF) && !idle {
			err = fmt.Errorf("%w: %s closed it (EOF)", ErrConnClosed, cc.addr)
		} else {
			err = fmt.Errorf("%w: %w", ErrConnClosed, err)
		}
	}
	cc.closeWith(err)
}

func (cc *clientConn) readFrames() error {
	for {
		f, err := cc.meta.readFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				cc.frames.Add(1)
				if cs := cc.stream(se.StreamID); cs != nil {
					cs.reset(se.Code, fmt.Errorf("%w: %v", ErrProtocol, se))
				}
				continue
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				return cc.connError(http2.ErrCode(ce), "bad frame: "+err.Error())
			}
			if errors.Is(err, http2.ErrFrameTooLarge) {
				return cc.connError(http2.ErrCodeFrameSize, "frame too large")
			}
			return err
		}
		cc.frames.Add(1)
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			err = cc.onHeaders(f)
		case *http2.DataFrame:
			err = cc.onData(f)
		case *http2.SettingsFrame:
			err = cc.onSettings(f)
		case *http2.WindowUpdateFrame:
			err = cc.onWindowUpdate(f)
		case *http2.RSTStreamFrame:
			if f.StreamID == 0 {
				return cc.connError(http2.ErrCodeProtocol, "RST_STREAM on stream 0")
			}
			if cs := cc.stream(f.StreamID); cs != nil {
				cs.onReset(f.ErrCode)
			}
		case *http2.GoAwayFrame:
			cc.onGoAway(f)
		case *http2.PingFrame:
			if !f.IsAck() {
				cc.wmu.Lock()
				if cc.werr == nil {
					if werr := cc.fr.WritePing(true, f.Data); werr != nil {
						cc.writeErrLocked(werr)
					}
					cc.flushLocked()
				}
				cc.wmu.Unlock()
			}
		case *http2.PushPromiseFrame:
			return cc.connError(http2.ErrCodeProtocol, "PUSH_PROMISE with push disabled")
		}
		if err != nil {
			return err
		}
	}
}

// stream returns the open stream id, or nil.
func (cc *clientConn) stream(id uint32) *clientStream {
	cc.mu.Lock()
	cs := cc.streams[id]
	cc.mu.Unlock()
	return cs
}

// unknownStream handles a frame for a stream not open: one never opened is
// a connection error; one closed is ignored.
func (cc *clientConn) unknownStream(id uint32, what string) error {
	cc.mu.Lock()
	next := cc.nextID
	cc.mu.Unlock()
	if id >= next || id%2 == 0 {
		return cc.connError(http2.ErrCodeProtocol, what+" on a stream never opened")
	}
	return nil
}

func (cc *clientConn) onHeaders(f *http2.MetaHeadersFrame) error {
	cs := cc.stream(f.StreamID)
	if cs == nil {
		return cc.unknownStream(f.StreamID, "HEADERS")
	}
	if f.Truncated {
		cs.reset(http2.ErrCodeCancel, fmt.Errorf("%w (more than %d bytes)", ErrHeaderTooLarge, cc.t.maxHeader()))
		return nil
	}
	cs.onHeaders(f)
	return nil
}

func (cc *clientConn) onData(f *http2.DataFrame) error {
	n := int32(f.Length)
	cc.mu.Lock()
	if n > cc.inflow {
		cc.mu.Unlock()
		return cc.connError(http2.ErrCodeFlowControl, "DATA beyond the connection's window")
	}
	cc.inflow -= n
	cs := cc.streams[f.StreamID]
	cc.mu.Unlock()
	if cs == nil {
		if err := cc.unknownStream(f.StreamID, "DATA"); err != nil {
			return err
		}
		cc.consumed(nil, n, 0)
		return nil
	}
	cs.onData(f, n)
	return nil
}

func (cc *clientConn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	var tableSize uint32
	var setTable bool
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		cc.mu.Lock()
		defer cc.mu.Unlock()
		switch s.ID {
		case http2.SettingMaxConcurrentStreams:
			cc.maxConcurrent = s.Val
		case http2.SettingInitialWindowSize:
			d := int32(s.Val) - cc.initialWindow
			for _, cs := range cc.streams {
				if int64(cs.sendWindow)+int64(d) > clientMaxWindow {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
				cs.sendWindow += d
			}
			cc.initialWindow = int32(s.Val)
			cc.cond.Broadcast()
		case http2.SettingMaxFrameSize:
			cc.maxFrame = s.Val
		case http2.SettingMaxHeaderListSize:
			cc.peerMaxHeaders = s.Val
		case http2.SettingHeaderTableSize:
			tableSize, setTable = s.Val, true
		}
		return nil
	})
	if err != nil {
		var ce http2.ConnectionError
		code := http2.ErrCodeProtocol
		if errors.As(err, &ce) {
			code = http2.ErrCode(ce)
		}
		return cc.connError(code, "bad SETTINGS: "+err.Error())
	}
	cc.wmu.Lock()
	if setTable {
		cc.henc.SetMaxDynamicTableSizeLimit(tableSize)
	}
	if cc.werr == nil {
		if err := cc.fr.WriteSettingsAck(); err != nil {
			cc.writeErrLocked(err)
		}
		cc.flushLocked()
	}
	cc.wmu.Unlock()
	return nil
}

func (cc *clientConn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if f.StreamID == 0 {
		if int64(cc.sendWindow)+int64(f.Increment) > clientMaxWindow {
			cc.mu.Unlock()
			err := cc.connError(http2.ErrCodeFlowControl, "connection window overflow")
			cc.mu.Lock()
			return err
		}
		cc.sendWindow += int32(f.Increment)
		cc.cond.Broadcast()
		return nil
	}
	cs := cc.streams[f.StreamID]
	if cs == nil {
		return nil
	}
	if int64(cs.sendWindow)+int64(f.Increment) > clientMaxWindow {
		cc.mu.Unlock()
		cs.reset(http2.ErrCodeFlowControl, fmt.Errorf("%w: stream window overflow", ErrProtocol))
		cc.mu.Lock()
		return nil
	}
	cs.sendWindow += int32(f.Increment)
	cc.cond.Broadcast()
	return nil
}

func (cc *clientConn) onGoAway(f *http2.GoAwayFrame) {
	cc.mu.Lock()
	cc.goAway = true
	cc.goAwayID = f.LastStreamID
	var refused []*clientStream
	for id, cs := range cc.streams {
		if id > f.LastStreamID {
			refused = append(refused, cs)
		}
	}
	cc.mu.Unlock()
	for _, cs := range refused {
		cs.fail(fmt.Errorf("%w (GOAWAY %v, last stream %d)", ErrStreamRefused, f.ErrCode, f.LastStreamID), false)
	}
	cc.mu.Lock()
	idle := len(cc.streams) == 0 && cc.reserved == 0
	cc.mu.Unlock()
	if idle {
		cc.closeWith(fmt.Errorf("%w: GOAWAY %v", ErrConnClosed, f.ErrCode))
	}
}

// forgetStream removes cs from the open streams.
func (cc *clientConn) forgetStream(cs *clientStream) {
	cc.mu.Lock()
	if cc.streams[cs.id] == cs {
		delete(cc.streams, cs.id)
		if len(cc.streams) == 0 {
			cc.idleSince = time.Now()
		}
	}
	cc.cond.Broadcast()
	closeNow := cc.goAway && !cc.closed && len(cc.streams) == 0 && cc.reserved == 0
	cc.mu.Unlock()
	if closeNow {
		cc.closeWith(fmt.Errorf("%w: GOAWAY", ErrConnClosed))
	}
}

// consumed gives back n bytes of the connection's window (read by the
// caller, or discarded), and k bytes of cs's: WINDOW_UPDATEs in batches of
// a quarter window.
func (cc *clientConn) consumed(cs *clientStream, n, k int32) {
	var connInc int32
	cc.mu.Lock()
	cc.unsent += n
	if cc.unsent >= cc.t.connWindow()/4 {
		connInc = cc.unsent
		cc.inflow += connInc
		cc.unsent = 0
	}
	closed := cc.closed
	cc.mu.Unlock()
	if closed || (connInc == 0 && k == 0) {
		return
	}
	cc.wmu.Lock()
	if cc.werr == nil {
		if connInc > 0 {
			_ = cc.fr.WriteWindowUpdate(0, uint32(connInc))
		}
		if k > 0 && cs != nil && !cs.wreset {
			_ = cc.fr.WriteWindowUpdate(cs.id, uint32(k))
		}
		cc.flushLocked()
	}
	cc.wmu.Unlock()
}
