package h1

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// ErrPeerUnresponsive marks the failure of an exchange whose connection
// Transport.Keepalive closed: the peer kept it waiting and did not complete
// a fresh connection within KeepaliveTimeout (a hung process, a partition).
var ErrPeerUnresponsive = errors.New("h1: peer unresponsive (keepalive check failed)")

// clockBase is the origin of now: monotonic, unmoved by wall-clock steps.
var clockBase = time.Now()

// now is the monotonic time in nanoseconds since clockBase (never 0).
func now() int64 { return int64(time.Since(clockBase)) + 1 }

// peer is the Keepalive state of one address, shared by its connections.
type peer struct {
	// heard is when an answer (response headers, or a failed read) last
	// came from the address, or a check dial to it succeeded.
	heard    atomic.Int64
	live     map[*conn]struct{} // Transport.mu
	checking bool               // Transport.mu: a check dial runs
	// dialing are the dials to the address in progress: a failed check
	// cancels them (a hung peer never completes a TLS handshake).
	dialing map[*pendingDial]struct{} // Transport.mu
}

// pendingDial is one dial in progress, for Keepalive.
type pendingDial struct {
	since  int64
	cancel context.CancelFunc
	killed atomic.Bool
}

// peerFor returns addr's peer state, made if needed. Called with t.mu held.
func (t *Transport) peerFor(addr string) *peer {
	if t.ka.peers == nil {
		t.ka.peers = map[string]*peer{}
	}
	p := t.ka.peers[addr]
	if p == nil {
		p = &peer{live: map[*conn]struct{}{}, dialing: map[*pendingDial]struct{}{}}
		p.heard.Store(now())
		t.ka.peers[addr] = p
	}
	if t.ka.timer == nil {
		t.ka.timer = time.AfterFunc(t.Keepalive/2, t.watch)
	}
	return p
}

// startDial registers a dial to addr; the returned context is cancelled if
// a check finds the peer hung. done must be called when the dial ends.
func (t *Transport) startDial(ctx context.Context, addr string) (context.Context, *pendingDial, func()) {
	if t.Keepalive <= 0 {
		return ctx, nil, func() {}
	}
	dctx, cancel := context.WithCancel(ctx)
	d := &pendingDial{since: now(), cancel: cancel}
	t.mu.Lock()
	p := t.peerFor(addr)
	p.dialing[d] = struct{}{}
	t.mu.Unlock()
	return dctx, d, func() {
		cancel()
		t.mu.Lock()
		delete(p.dialing, d)
		if len(p.live) == 0 && len(p.dialing) == 0 && !p.checking && t.ka.peers[addr] == p {
			delete(t.ka.peers, addr)
		}
		t.mu.Unlock()
	}
}

// keepalive is a Transport's Keepalive state, under Transport.mu.
type keepalive struct {
	peers map[string]*peer
	timer *time.Timer // the watch, armed while a connection lives
}

func (t *Transport) kaTimeout() time.Duration {
	if t.KeepaliveTimeout > 0 {
		return t.KeepaliveTimeout
	}
	return t.Keepalive
}

// track registers a new connection with Keepalive.
func (t *Transport) track(c *conn) {
	if t.Keepalive <= 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.peerFor(c.addr)
	c.peer = p
	c.t = t
	p.live[c] = struct{}{}
}

// forget takes a closed connection out of Keepalive's live set (once).
func (c *conn) forget() {
	if c.peer == nil || c.gone.Swap(true) {
		return
	}
	t := c.t
	t.mu.Lock()
	delete(c.peer.live, c)
	if len(c.peer.live) == 0 && len(c.peer.dialing) == 0 && !c.peer.checking && t.ka.peers[c.addr] == c.peer {
		delete(t.ka.peers, c.addr)
	}
	t.mu.Unlock()
}

// heard notes that the exchange on c stopped waiting: an answer (or an
// error) came.
func (c *conn) heard() {
	c.waitSince.Store(0)
	if c.peer != nil {
		c.peer.heard.Store(now())
	}
}

// watch runs every Keepalive/2 while connections live: it starts a check
// of every address with an exchange waiting longer than Keepalive and
// nothing heard from it for as long.
func (t *Transport) watch() {
	ka := int64(t.Keepalive)
	n := now()
	var suspects []string
	t.mu.Lock()
	for addr, p := range t.ka.peers {
		if p.checking || n-p.heard.Load() < ka {
			continue
		}
		for d := range p.dialing {
			if n-d.since >= ka {
				p.checking = true
				break
			}
		}
		if p.checking {
			suspects = append(suspects, addr)
			continue
		}
		for c := range p.live {
			if ws := c.waitSince.Load(); ws != 0 && n-ws >= ka {
				p.checking = true
				suspects = append(suspects, addr)
				break
			}
		}
	}
	if len(t.ka.peers) > 0 && !t.closed {
		t.ka.timer.Reset(t.Keepalive / 2)
	} else {
		t.ka.timer = nil
	}
	t.mu.Unlock()
	for _, addr := range suspects {
		go t.check(addr)
	}
}

// check dials addr afresh within KeepaliveTimeout: on success the new
// connection joins the idle pool; on failure every connection to addr is
// closed, and the exchanges on them fail with ErrPeerUnresponsive.
func (t *Transport) check(addr string) {
	ctx, cancel := context.WithTimeout(context.Background(), t.kaTimeout())
	defer cancel()
	nc, err := t.DialContext(ctx, "tcp", addr)
	t.mu.Lock()
	p := t.ka.peers[addr]
	if p == nil {
		t.mu.Unlock()
		if err == nil {
			_ = nc.Close()
		}
		return
	}
	p.checking = false
	if err == nil {
		p.heard.Store(now())
		t.mu.Unlock()
		c := &conn{nc: nc, raw: tcpConn(nc), addr: addr}
		t.track(c)
		t.putIdle(c)
		return
	}
	var doomed []*conn
	for c := range p.live {
		c.killed.Store(true)
		doomed = append(doomed, c)
	}
	for d := range p.dialing {
		d.killed.Store(true)
		d.cancel()
	}
	if l := t.idle[addr]; len(l) > 0 {
		delete(t.idle, addr)
	}
	if len(p.live) == 0 && len(p.dialing) == 0 {
		delete(t.ka.peers, addr)
	}
	t.mu.Unlock()
	for _, c := range doomed {
		c.abort()
	}
}
