package h2

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Budgets against floods (see the package documentation).
const (
	// srvResetBudget is how many streams a client may reset before it
	// completed as many; each completed stream gives one back.
	srvResetBudget = 1000
	// srvControlBudget is how many control frames (PING, SETTINGS, empty
	// DATA, PRIORITY, WINDOW_UPDATE) a connection may send per second,
	// plus srvControlPerStream per stream opened in that second.
	srvControlBudget    = 1000
	srvControlPerStream = 8
	// srvMaxRunning bounds the handlers a connection may have running,
	// reset streams' included, as a multiple of MaxConcurrentStreams.
	srvMaxRunning = 2
)

// serverConn is one connection of a Server.
type serverConn struct {
	srv      *Server
	nc       net.Conn
	br       *bufio.Reader
	fr       *http2.Framer   // reads by the reader goroutine, writes under wmu
	meta     *metaReader     // decodes header blocks read from fr
	ctx      context.Context // ConnContext's: the parent of the streams' contexts
	remote   string
	tlsState *tls.ConnectionState
	handlers sync.WaitGroup

	// Reader goroutine's own state.
	maxStreamID  uint32    // highest client stream ID seen
	rdl          time.Time // read deadline in force; zero: none
	ctlCount     int       // control frames in this second
	ctlStreams   int       // streams opened in this second
	ctlSecond    int64
	ackMaybe     bool         // a PING ack may wait in bw: settleAck before waiting
	connRecvLeft atomic.Int64 // connection receive window left (taken by the reader, given back by handlers)
	draining     atomic.Bool  // GOAWAY sent and no stream left: reading until EOF or a second passed

	// Written by handlers and the reader.
	connUnacked atomic.Int64 // body bytes read by handlers, not yet given back

	mu          sync.Mutex // the streams and the send windows
	cond        sync.Cond  // send windows opened, a stream reset, the connection ended
	streams     map[uint32]*serverStream
	running     int       // handlers running
	idleSince   time.Time // when the last stream or handler ended
	resetBudget int
	sendWin     int64        // connection send window
	initSendWin int64        // peer's SETTINGS_INITIAL_WINDOW_SIZE
	peerFrame   atomic.Int64 // peer's SETTINGS_MAX_FRAME_SIZE, capped at srvFrameSize
	goAwaySent  bool
	lastStream  uint32 // GOAWAY's last stream ID
	closed      bool   // the reader ended: no more frames, no more writes

	// flushers counts the writers on their way to a flush (a handler's
	// end, Flush): the last of them flushes for all, so answers finished
	// together leave in one write, as net/http's serve loop batches them.
	flushers atomic.Int32

	wmu  sync.Mutex // the writes: fr's writer, bw, henc, hbuf
	bw   *bufio.Writer
	henc *hpack.Encoder
	hbuf bytes.Buffer
	werr error     // sticky write error
	wdl  time.Time // write deadline in force

	// A PING ack written while more frames were buffered waits in bw for
	// the next flush: a gRPC client's BDP ping arrives right before its
	// next request, whose answer carries the ack (one socket write per
	// call fewer). settleAck bounds the wait by srvAckDelay.
	ackPending bool        // under wmu
	ackTimer   *time.Timer // under wmu; flushAck

	prefaceSent bool // our SETTINGS written (under wmu)
}

func newServerConn(s *Server, c net.Conn, br *bufio.Reader) *serverConn {
	sc := &serverConn{
		srv:         s,
		nc:          c,
		br:          br,
		streams:     make(map[uint32]*serverStream),
		sendWin:     65535,
		initSendWin: 65535,
		resetBudget: srvResetBudget,
		tlsState:    srvTLSState(c),
	}
	sc.bw = bufio.NewWriterSize(srvDeadlineWriter{sc}, 8<<10)
	sc.connRecvLeft.Store(65535)
	sc.peerFrame.Store(srvFrameSize)
	sc.cond.L = &sc.mu
	sc.fr = http2.NewFramer(sc.bw, br)
	sc.fr.SetMaxReadFrameSize(srvFrameSize)
	sc.fr.MaxHeaderListSize = s.maxHeaderList()
	sc.meta = newMetaReader(sc.fr, srvNewDecoder())
	sc.fr.SetReuseFrames()
	sc.henc = hpack.NewEncoder(&sc.hbuf)
	if ra := c.RemoteAddr(); ra != nil {
		sc.remote = ra.String()
	}
	ctx := context.Background()
	if s.ConnContext != nil {
		ctx = s.ConnContext(ctx, c)
	}
	sc.ctx = ctx
	return sc
}

// serve runs the reader loop, then tears the connection down.
func (c *serverConn) serve() {
	err := c.readLoop()
	var ce srvConnErr
	if errors.As(err, &ce) {
		c.srv.log().Debug("h2: connection error", "remote", c.remote, "code", ce.code.String(), "reason", ce.reason)
		c.goAway(ce.code)
		// Read on (dropping) until the client closes or a second passed,
		// so our close does not reset the connection before it read the
		// GOAWAY.
		_, _ = io.Copy(io.Discard, c.br)
	}
	c.mu.Lock()
	c.closed = true
	streams := make([]*serverStream, 0, len(c.streams))
	for _, st := range c.streams {
		streams = append(streams, st)
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	for _, st := range streams {
		st.ctx.Cancel()
		st.body.fail(srvErrClientGone)
	}
	c.wmu.Lock()
	if c.werr == nil {
		c.werr = net.ErrClosed
	}
	if c.ackTimer != nil {
		c.ackTimer.Stop()
	}
	c.wmu.Unlock()
	_ = c.nc.Close()
	c.handlers.Wait()
}

// readLoop reads the preface and then frames until an error.
func (c *serverConn) readLoop() error {
	s := c.srv
	_ = c.nc.SetReadDeadline(time.Now().Add(s.readHeaderTimeout()))
	var pre [len(srvPreface)]byte
	if _, err := io.ReadFull(c.br, pre[:]); err != nil {
		return err
	}
	if string(pre[:]) != srvPreface {
		return srvConnErr{http2.ErrCodeProtocol, "bad preface"}
	}
	c.rdl = time.Time{}
	// Our SETTINGS and the connection window, then the client's SETTINGS
	// must come first.
	c.wmu.Lock()
	c.writePrefaceLocked()
	c.flushLocked()
	c.wmu.Unlock()
	c.mu.Lock()
	c.idleSince = time.Now()
	c.mu.Unlock()

	first := true
	for {
		if err := c.awaitFrame(); err != nil {
			return err
		}
		f, err := c.meta.readFrame()
		if err != nil {
			var se http2.StreamError
			switch {
			case errors.As(err, &se):
				if err := c.streamError(se); err != nil {
					return err
				}
				continue
			case errors.Is(err, http2.ErrFrameTooLarge):
				return srvConnErr{http2.ErrCodeFrameSize, "frame too large"}
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				return srvConnErr{http2.ErrCode(ce), "framer: " + srvErrString(c.fr.ErrorDetail(), err)}
			}
			return err
		}
		if first {
			sf, ok := f.(*http2.SettingsFrame)
			if !ok || sf.IsAck() {
				return srvConnErr{http2.ErrCodeProtocol, "the first frame is not SETTINGS"}
			}
			first = false
		}
		if err := c.processFrame(f); err != nil {
			return err
		}
	}
}

// writePrefaceLocked writes our SETTINGS and the connection window once
// (wmu held): the first frames of the connection, also when a GOAWAY
// (Shutdown) comes before the client's preface was read.
func (c *serverConn) writePrefaceLocked() {
	if c.prefaceSent {
		return
	}
	c.prefaceSent = true
	s := c.srv
	_ = c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: s.maxStreams()},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(s.streamWindow())},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: s.maxHeaderList()},
	)
	if d := s.connWindow() - 65535; d > 0 {
		_ = c.fr.WriteWindowUpdate(0, uint32(d))
	}
	c.connRecvLeft.Store(int64(s.connWindow()))
}

func srvErrString(detail, err error) string {
	if detail != nil {
		return detail.Error()
	}
	return err.Error()
}

// awaitFrame waits for the first byte of the next frame under the idle
// timeout when no stream is open (none when streams are: a stream may
// rightly stay quiet), then bounds the reading of the frame by
// ReadHeaderTimeout unless it is all buffered. Deadlines move at most about
// once a second.
func (c *serverConn) awaitFrame() error {
	s := c.srv
	if c.ackMaybe && c.br.Buffered() == 0 {
		c.ackMaybe = false
		c.settleAck()
	}
	for c.br.Buffered() == 0 {
		_, err := c.br.Peek(1)
		if err == nil {
			break
		}
		if !srvIsTimeout(err) || c.draining.Load() {
			return err
		}
		now := time.Now()
		c.mu.Lock()
		open := len(c.streams) > 0 || c.running > 0
		idleSince := c.idleSince
		c.mu.Unlock()
		if open {
			c.setReadDeadline(time.Time{})
			continue
		}
		if idleEnd := idleSince.Add(s.idleTimeout()); now.Before(idleEnd) {
			c.setReadDeadline(idleEnd)
			continue
		}
		c.goAway(http2.ErrCodeNo)
		return err
	}
	if b, _ := c.br.Peek(min(c.br.Buffered(), 9)); len(b) == 9 {
		if n := int(b[0])<<16 | int(b[1])<<8 | int(b[2]); c.br.Buffered() >= 9+n {
			return nil // the whole frame is here
		}
	}
	rht := s.readHeaderTimeout()
	if d := time.Now().Add(rht); c.rdl.IsZero() || d.Sub(c.rdl) > rht/8 {
		c.setReadDeadline(d)
	}
	return nil
}

func (c *serverConn) setReadDeadline(t time.Time) {
	if c.draining.Load() {
		return // closeSoon's deadline stays
	}
	c.rdl = t
	_ = c.nc.SetReadDeadline(t)
	if c.draining.Load() {
		_ = c.nc.SetReadDeadline(time.Now().Add(srvDrainTime))
	}
}

func srvIsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

// control counts a control frame against the flood budget.
func (c *serverConn) control() error {
	now := time.Now().Unix()
	if now != c.ctlSecond {
		c.ctlSecond, c.ctlCount, c.ctlStreams = now, 0, 0
	}
	c.ctlCount++
	if c.ctlCount > srvControlBudget+srvControlPerStream*c.ctlStreams {
		return srvConnErr{http2.ErrCodeEnhanceYourCalm, "control frame flood"}
	}
	return nil
}

func (c *serverConn) processFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		return c.processData(f)
	case *http2.MetaHeadersFrame:
		return c.processHeaders(f)
	case *http2.SettingsFrame:
		return c.processSettings(f)
	case *http2.WindowUpdateFrame:
		return c.processWindowUpdate(f)
	case *http2.PingFrame:
		if err := c.control(); err != nil {
			return err
		}
		if f.IsAck() {
			return nil
		}
		c.wmu.Lock()
		_ = c.fr.WritePing(true, f.Data)
		if c.br.Buffered() > 0 {
			c.ackPending = true // settleAck decides before the reader waits
			c.ackMaybe = true
		} else {
			c.flushLocked()
		}
		c.wmu.Unlock()
		return nil
	case *http2.RSTStreamFrame:
		return c.processReset(f)
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			return c.streamError(http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol})
		}
		return c.control()
	case *http2.GoAwayFrame:
		// The client goes away: finish what runs, then close.
		c.goAway(http2.ErrCodeNo)
		return nil
	case *http2.PushPromiseFrame:
		return srvConnErr{http2.ErrCodeProtocol, "PUSH_PROMISE from a client"}
	case *http2.ContinuationFrame:
		return srvConnErr{http2.ErrCodeProtocol, "CONTINUATION out of place"}
	}
	return nil // unknown frame types are ignored (RFC 9113 §5.5)
}

func (c *serverConn) processSettings(f *http2.SettingsFrame) error {
	if err := c.control(); err != nil {
		return err
	}
	if f.IsAck() {
		return nil
	}
	var err error
	win := int64(-1) // the last SETTINGS_INITIAL_WINDOW_SIZE of the frame
	_ = f.ForeachSetting(func(st http2.Setting) error {
		if e := st.Valid(); e != nil {
			var ce http2.ConnectionError
			if errors.As(e, &ce) {
				err = srvConnErr{http2.ErrCode(ce), "bad setting " + st.ID.String()}
			} else {
				err = srvConnErr{http2.ErrCodeProtocol, "bad setting " + st.ID.String()}
			}
			return err
		}
		switch st.ID {
		case http2.SettingInitialWindowSize:
			// Applied once below: a frame full of them must not cost
			// entries × streams.
			win = int64(st.Val)
		case http2.SettingMaxFrameSize:
			c.peerFrame.Store(int64(min(st.Val, srvFrameSize)))
		case http2.SettingHeaderTableSize:
			c.wmu.Lock()
			c.henc.SetMaxDynamicTableSizeLimit(st.Val)
			c.wmu.Unlock()
		}
		return err
	})
	if err != nil {
		return err
	}
	if win >= 0 {
		c.mu.Lock()
		d := win - c.initSendWin
		c.initSendWin = win
		for _, s := range c.streams {
			s.sendWin += d
			if s.sendWin > 1<<31-1 {
				err = srvConnErr{http2.ErrCodeFlowControl, "window overflow"}
			}
		}
		c.cond.Broadcast()
		c.mu.Unlock()
		if err != nil {
			return err
		}
	}
	c.wmu.Lock()
	_ = c.fr.WriteSettingsAck()
	c.flushLocked()
	c.wmu.Unlock()
	return nil
}

func (c *serverConn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	inc := int64(f.Increment)
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		if c.sendWin+inc > 1<<31-1 {
			return srvConnErr{http2.ErrCodeFlowControl, "connection window overflow"}
		}
		c.sendWin += inc
		c.cond.Broadcast()
		return nil
	}
	st := c.streams[f.StreamID]
	if st == nil {
		if f.StreamID > c.maxStreamID {
			return srvConnErr{http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream"}
		}
		c.mu.Unlock()
		err := c.control() // a closed stream: no use
		c.mu.Lock()
		return err
	}
	if st.sendWin+inc > 1<<31-1 {
		c.mu.Unlock()
		err := c.streamError(http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl})
		c.mu.Lock()
		return err
	}
	st.sendWin += inc
	c.cond.Broadcast()
	return nil
}

func (c *serverConn) processReset(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	st := c.streams[f.StreamID]
	if st == nil {
		idle := f.StreamID > c.maxStreamID
		c.mu.Unlock()
		if idle {
			return srvConnErr{http2.ErrCodeProtocol, "RST_STREAM on an idle stream"}
		}
		return c.control()
	}
	c.removeLocked(st)
	st.resetByPeer = true
	st.gone.Store(true)
	c.cond.Broadcast()
	c.resetBudget--
	over := c.resetBudget < 0
	c.mu.Unlock()
	st.ctx.Cancel()
	st.body.fail(srvErrStreamReset)
	if over {
		return srvConnErr{http2.ErrCodeEnhanceYourCalm, "too many streams reset"}
	}
	return nil
}

// removeLocked takes st out of the stream map (c.mu held).
func (c *serverConn) removeLocked(st *serverStream) {
	if !st.removed {
		st.removed = true
		delete(c.streams, st.id)
		if len(c.streams) == 0 && c.running == 0 {
			c.idleSince = time.Now()
		}
	}
}

// streamError resets a stream (RST_STREAM) for an error on it.
func (c *serverConn) streamError(se http2.StreamError) error {
	c.mu.Lock()
	if se.StreamID > c.maxStreamID {
		c.maxStreamID = se.StreamID // a refused HEADERS still opened the stream
	}
	st := c.streams[se.StreamID]
	if st != nil {
		c.removeLocked(st)
		st.resetSent = true
		st.gone.Store(true)
		c.cond.Broadcast()
	}
	c.mu.Unlock()
	if st != nil {
		st.ctx.Cancel()
		st.body.fail(srvErrStreamReset)
	}
	c.writeReset(se.StreamID, se.Code)
	// Each answers a frame of the client's with a RST_STREAM: a flood of
	// them (DATA on closed streams, malformed requests) costs the control
	// budget as PING's does.
	return c.control()
}

func (c *serverConn) writeReset(id uint32, code http2.ErrCode) {
	c.wmu.Lock()
	_ = c.fr.WriteRSTStream(id, code)
	c.flushLocked()
	c.wmu.Unlock()
}

// goAway sends GOAWAY (once) with the highest stream ID seen; a
// connection without streams then closes.
func (c *serverConn) goAway(code http2.ErrCode) {
	c.mu.Lock()
	if c.goAwaySent && code == http2.ErrCodeNo {
		c.mu.Unlock()
		return
	}
	c.goAwaySent = true
	c.lastStream = c.maxStreamID
	last := c.lastStream
	idle := len(c.streams) == 0 && c.running == 0
	c.mu.Unlock()
	c.wmu.Lock()
	c.writePrefaceLocked() // SETTINGS is the server's first frame (RFC 9113 §3.4)
	_ = c.fr.WriteGoAway(last, code, nil)
	c.flushLocked()
	c.wmu.Unlock()
	if code != http2.ErrCodeNo || idle {
		c.closeSoon()
	}
}

// closeSoon ends the connection gently: the reader reads on (dropping what
// comes) for up to a second, so the client reads our last frames before
// the close, then the connection closes.
func (c *serverConn) closeSoon() {
	c.draining.Store(true)
	_ = c.nc.SetReadDeadline(time.Now().Add(srvDrainTime))
}

// srvDrainTime is how long a connection closing gently reads on.
const srvDrainTime = time.Second

// flushSoon announces a flush: the caller will call flushDone.
func (c *serverConn) flushSoon() { c.flushers.Add(1) }

// flushDone flushes unless another announced flush is still to come (it
// will carry these bytes too).
func (c *serverConn) flushDone() {
	c.wmu.Lock()
	if c.flushers.Add(-1) == 0 {
		c.flushLocked()
	}
	c.wmu.Unlock()
}

// srvAckDelay bounds how long a PING ack may wait for a handler's flush
// (a variable for tests).
var srvAckDelay = 10 * time.Millisecond

// settleAck runs when the reader is about to wait for the socket: a PING
// ack left in bw goes out now unless a handler runs, whose flush will
// carry it; srvAckDelay bounds that (a handler may run for long).
func (c *serverConn) settleAck() {
	c.mu.Lock()
	busy := c.running > 0
	c.mu.Unlock()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	switch {
	case !c.ackPending:
	case !busy:
		c.flushLocked()
	case c.ackTimer == nil:
		c.ackTimer = time.AfterFunc(srvAckDelay, c.flushAck)
	default:
		c.ackTimer.Reset(srvAckDelay)
	}
}

// flushAck flushes a PING ack no handler's flush took along.
func (c *serverConn) flushAck() {
	c.wmu.Lock()
	if c.ackPending {
		c.flushLocked()
	}
	c.wmu.Unlock()
}

// flushLocked flushes bw (wmu held) under the write deadline.
func (c *serverConn) flushLocked() {
	c.ackPending = false
	if c.werr != nil {
		c.bw.Reset(io.Discard)
		return
	}
	if c.bw.Buffered() == 0 {
		return
	}
	if err := c.bw.Flush(); err != nil && c.werr == nil {
		c.werr = err
		_ = c.nc.Close() // the reader ends, streams see their contexts cancelled
	}
}

// srvDeadlineWriter is what bw writes to: every socket write, a flush or
// a frame larger than bw's room written straight through, runs under a
// fresh SendTimeout deadline (wmu held). A failed write is the
// connection's end: werr is set at once and the connection closed, so no
// later write is taken for sent (bw's own error is sticky and silent).
type srvDeadlineWriter struct{ c *serverConn }

func (w srvDeadlineWriter) Write(p []byte) (int, error) {
	c := w.c
	if t := c.srv.sendTimeout(); t > 0 {
		if d := time.Now().Add(t); c.wdl.IsZero() || d.Sub(c.wdl) > t/8 {
			c.wdl = d
			_ = c.nc.SetWriteDeadline(d)
		}
	}
	n, err := c.nc.Write(p)
	if err != nil && c.werr == nil {
		c.werr = err
		_ = c.nc.Close() // the reader ends, streams see their contexts cancelled
	}
	return n, err
}

// processData hands a DATA frame's payload to its stream's body.
func (c *serverConn) processData(f *http2.DataFrame) error {
	n := int64(f.Length) // padding included: it counts against the windows
	if n > c.connRecvLeft.Load() {
		return srvConnErr{http2.ErrCodeFlowControl, "connection window exceeded"}
	}
	c.connRecvLeft.Add(-n)
	data := f.Data()
	if n == 0 && !f.StreamEnded() {
		if err := c.control(); err != nil {
			return err
		}
	}
	c.mu.Lock()
	st := c.streams[f.StreamID]
	if st == nil || st.remoteDone {
		idle := f.StreamID > c.maxStreamID
		c.mu.Unlock()
		c.giveBack(n) // nobody reads it
		if idle {
			return srvConnErr{http2.ErrCodeProtocol, "DATA on an idle stream"}
		}
		return c.streamError(http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeStreamClosed})
	}
	if n > st.recvLeft {
		c.mu.Unlock()
		c.giveBack(n)
		return c.streamError(http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl})
	}
	st.recvLeft -= n
	st.received += int64(len(data))
	if st.declared >= 0 && (st.received > st.declared || f.StreamEnded() && st.received != st.declared) {
		c.mu.Unlock()
		c.giveBack(n)
		return c.streamError(http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol})
	}
	if f.StreamEnded() {
		st.remoteDone = true
		if st.localDone {
			c.removeLocked(st)
		}
	}
	c.mu.Unlock()
	if pad := n - int64(len(data)); pad > 0 {
		c.giveBack(pad)
	}
	if !st.body.push(data, f.StreamEnded()) {
		c.giveBack(int64(len(data))) // the handler is done with the body
	}
	return nil
}

// giveBack returns n bytes of the connection's receive window (read by a
// handler or dropped), with a WINDOW_UPDATE once a quarter window gathered.
func (c *serverConn) giveBack(n int64) {
	if n <= 0 {
		return
	}
	if u := c.connUnacked.Add(n); u >= int64(c.srv.connWindow()/4) {
		if c.connUnacked.CompareAndSwap(u, 0) {
			c.connRecvLeft.Add(u) // before the client can use it
			c.wmu.Lock()
			_ = c.fr.WriteWindowUpdate(0, uint32(u))
			c.flushLocked()
			c.wmu.Unlock()
		}
	}
}
