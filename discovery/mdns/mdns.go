package mdns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"

	"github.com/meshd/meshd/discovery"
)

// Name is the --resolver value of this backend.
const Name = "mdns"

// Port and Group are the mDNS port and IPv4 group (RFC 6762).
const Port = 5353

// Group is the IPv4 mDNS multicast group.
var Group = net.IPv4(224, 0, 0, 251)

// Hint is appended to the error when no interface can multicast.
const Hint = "on Linux: ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo " +
	"(or name a multicast-capable interface in the --resolver-config file: interfaces: [eth0])"

// ErrNoMulticast is returned (wrapped, with Hint) by Build when none of the
// selected interfaces is up and multicast-capable.
var ErrNoMulticast = errors.New("mdns: no multicast-capable interface")

// tick is how often the resolver checks expiries and announcement times.
const tick = 100 * time.Millisecond

// startBurst are the times after start (and after a health change) when
// the local instance is announced, before the steady every-TTL/3 rhythm.
var startBurst = []time.Duration{0, 250 * time.Millisecond, time.Second}

func init() { discovery.Register(Builder{}) }

// Builder builds mdns resolvers.
type Builder struct{}

var _ discovery.Builder = Builder{}

// Name implements discovery.Builder.
func (Builder) Name() string { return Name }

// Build implements discovery.Builder: it reads the optional config file,
// opens the mDNS socket on the selected interfaces, announces
// opts.Local (if set), browses, and returns once the first browse window
// (Config.BrowseWait) has passed and its result has been pushed.
func (Builder) Build(ctx context.Context, opts discovery.BuildOptions, u discovery.Updater) (discovery.Resolver, error) {
	cfg, err := LoadConfig(opts.ConfigFile)
	if err != nil {
		return nil, err
	}
	return Start(ctx, cfg, opts.Local, opts.Logger, u)
}

// Resolver is a running mdns backend. It implements discovery.Resolver and
// discovery.LocalHealthSetter.
type Resolver struct {
	cfg     Config
	service string // lower case, fully qualified: _meshd._tcp.local.
	ttl     uint32
	log     *slog.Logger
	u       discovery.Updater

	conn   *ipv4.PacketConn
	ifaces []net.Interface
	ifIdx  map[int]bool

	mu        sync.Mutex
	local     *record // nil: nothing announced
	peers     map[string]*peer
	ready     bool        // the first state was pushed: push changes from now on
	announces []time.Time // pending burst announcements of local
	nextBeat  time.Time   // next steady announcement of local

	kick      chan struct{}
	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

var (
	_ discovery.Resolver          = (*Resolver)(nil)
	_ discovery.LocalHealthSetter = (*Resolver)(nil)
)

// peer is a cached instance.
type peer struct {
	rec     record
	ttl     time.Duration
	seen    time.Time // last refresh
	queried bool      // a refresh query went out since seen
}

func (p *peer) expires() time.Time { return p.seen.Add(p.ttl) }

// Start runs an mdns resolver with cfg (ParseConfig's defaults filled in).
// local.Target.AppID == "" browses without announcing.
func Start(ctx context.Context, cfg Config, local discovery.LocalInstance, log *slog.Logger, u discovery.Updater) (*Resolver, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("mdns: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	r := &Resolver{
		cfg: cfg, service: strings.ToLower(cfg.Service) + ".local.", ttl: uint32(cfg.TTL / time.Second),
		log: log.With("resolver", Name), u: u, peers: map[string]*peer{},
		kick: make(chan struct{}, 1), done: make(chan struct{}),
	}
	if local.Target.AppID != "" {
		if !validAddr(local.Address) {
			return nil, fmt.Errorf("mdns: local address %q is not host:port (set --advertise-address)", local.Address)
		}
		r.local = &record{name: instanceName(local.Target.AppID, r.service), target: local.Target,
			addr: local.Address, healthy: true}
	}
	ifaces, err := selectInterfaces(cfg.Interfaces)
	if err != nil {
		return nil, err
	}
	if err := r.open(ifaces); err != nil {
		return nil, err
	}
	now := time.Now()
	if r.local != nil {
		for _, d := range startBurst {
			r.announces = append(r.announces, now.Add(d))
		}
		r.nextBeat = now.Add(cfg.TTL / 3)
	}
	r.wg.Add(2)
	go r.recvLoop()
	go r.tickLoop()
	r.query("") // browse: every instance answers
	names := make([]string, len(r.ifaces))
	for i, ifi := range r.ifaces {
		names[i] = ifi.Name
	}
	r.log.Info("mdns: browsing", "service", r.service, "interfaces", names, "ttl", cfg.TTL)
	if r.local != nil {
		r.log.Info("mdns: announcing", "instance", r.local.name, "app", local.Target.String(), "addr", local.Address)
	}

	select {
	case <-time.After(cfg.BrowseWait / 2):
		r.query("") // a second query, in case the first was lost
	case <-ctx.Done():
	}
	select {
	case <-time.After(cfg.BrowseWait - cfg.BrowseWait/2):
	case <-ctx.Done():
	}
	if err := ctx.Err(); err != nil {
		r.Close()
		return nil, fmt.Errorf("mdns: %w", err)
	}
	r.mu.Lock()
	r.ready = true
	all := make(map[discovery.Target][]discovery.Endpoint)
	for _, p := range r.peers {
		all[p.rec.target] = nil
	}
	for t := range all {
		all[t] = r.endpoints(t)
	}
	r.u.ReplaceAll(all)
	r.mu.Unlock()
	r.log.Info("mdns: first browse done", "apps", len(all))
	return r, nil
}

// instanceName is a unique instance name: the app ID (for people reading
// captures) and 48 random bits.
func instanceName(app, service string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	label := strings.ToLower(app)
	if len(label) > 40 {
		label = label[:40]
	}
	return label + "-" + hex.EncodeToString(b[:]) + "." + service
}

// selectInterfaces returns the named interfaces, or every interface that is
// up and multicast-capable. Named interfaces must exist, be up and be
// multicast-capable.
func selectInterfaces(names []string) ([]net.Interface, error) {
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("mdns: list interfaces: %w", err)
	}
	ok := func(ifi net.Interface) bool {
		return ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0
	}
	var out []net.Interface
	if len(names) == 0 {
		var seen []string
		for _, ifi := range all {
			seen = append(seen, ifi.Name+" <"+ifi.Flags.String()+">")
			if ok(ifi) {
				out = append(out, ifi)
			}
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("%w (interfaces: %s); %s", ErrNoMulticast, strings.Join(seen, ", "), Hint)
		}
		return out, nil
	}
	for _, name := range names {
		i := slices.IndexFunc(all, func(ifi net.Interface) bool { return ifi.Name == name })
		if i < 0 {
			have := make([]string, len(all))
			for j, ifi := range all {
				have[j] = ifi.Name
			}
			return nil, fmt.Errorf("mdns: interface %q not found (have: %s)", name, strings.Join(have, ", "))
		}
		if !ok(all[i]) {
			return nil, fmt.Errorf("%w: %s is not up and multicast-capable (flags %s); %s",
				ErrNoMulticast, name, all[i].Flags, strings.ReplaceAll(Hint, " lo", " "+name))
		}
		out = append(out, all[i])
	}
	return out, nil
}

// open binds the mDNS port (shared with every other mDNS speaker on the
// host: SO_REUSEADDR and SO_REUSEPORT) and joins the group on each
// interface. Interfaces where the join fails are left out; none left is an
// error.
func (r *Resolver) open(ifaces []net.Interface) error {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
			if serr == nil {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf /* SO_REUSEPORT */, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", fmt.Sprintf("0.0.0.0:%d", Port))
	if err != nil {
		return fmt.Errorf("mdns: listen udp4 :%d: %w", Port, err)
	}
	conn := ipv4.NewPacketConn(pc)
	var errs []string
	for _, ifi := range ifaces {
		if err := conn.JoinGroup(&ifi, &net.UDPAddr{IP: Group}); err != nil {
			errs = append(errs, ifi.Name+": "+err.Error())
			r.log.Warn("mdns: cannot join the mDNS group; interface left out", "interface", ifi.Name, "err", err)
			continue
		}
		r.ifaces = append(r.ifaces, ifi)
	}
	if len(r.ifaces) == 0 {
		pc.Close()
		return fmt.Errorf("%w (join %s failed: %s); %s", ErrNoMulticast, Group, strings.Join(errs, "; "), Hint)
	}
	_ = conn.SetControlMessage(ipv4.FlagInterface, true)
	_ = conn.SetMulticastTTL(255)
	_ = conn.SetMulticastLoopback(true) // other sidecars on this host
	r.ifIdx = make(map[int]bool, len(r.ifaces))
	for _, ifi := range r.ifaces {
		r.ifIdx[ifi.Index] = true
	}
	r.conn = conn
	return nil
}

// send writes m to the group on every selected interface.
func (r *Resolver) send(m *dns.Msg) {
	buf, err := m.Pack()
	if err != nil {
		r.log.Error("mdns: pack", "err", err)
		return
	}
	dst := &net.UDPAddr{IP: Group, Port: Port}
	for _, ifi := range r.ifaces {
		if _, err := r.conn.WriteTo(buf, &ipv4.ControlMessage{IfIndex: ifi.Index}, dst); err != nil {
			r.log.Debug("mdns: send", "interface", ifi.Name, "err", err)
		}
	}
}

// query asks for every instance of the service (instance == "") or for one
// instance's records.
func (r *Resolver) query(instance string) {
	m := new(dns.Msg)
	if instance == "" {
		m.SetQuestion(r.service, dns.TypePTR)
	} else {
		m.SetQuestion(instance, dns.TypeTXT)
	}
	m.Id, m.RecursionDesired = 0, false
	r.send(m)
}

// announce sends the local instance's records (ttl 0: goodbye).
func (r *Resolver) announce(rec record, ttl uint32) {
	m := &dns.Msg{MsgHdr: dns.MsgHdr{Response: true, Authoritative: true}}
	m.Answer = rec.records(r.service, ttl)
	r.send(m)
}

func (r *Resolver) localRecord() (record, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.local == nil {
		return record{}, false
	}
	return *r.local, true
}

func (r *Resolver) recvLoop() {
	defer r.wg.Done()
	buf := make([]byte, 9000)
	for {
		n, cm, _, err := r.conn.ReadFrom(buf)
		if err != nil {
			select {
			case <-r.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			r.log.Warn("mdns: read", "err", err)
			continue
		}
		if cm != nil && !r.ifIdx[cm.IfIndex] {
			continue // arrived on an interface we were told not to use
		}
		m := new(dns.Msg)
		if m.Unpack(buf[:n]) != nil {
			continue
		}
		if !m.Response {
			if local, ok := r.localRecord(); ok && asksFor(m, r.service, local.name) {
				r.announce(local, r.ttl)
			}
			continue
		}
		if s := parseResponse(m, r.service); len(s) > 0 {
			r.apply(s, time.Now())
		}
	}
}

// apply merges what a response said into the cache and pushes the targets
// that changed.
func (r *Resolver) apply(ss []seen, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := map[discovery.Target]bool{}
	for _, s := range ss {
		p := r.peers[s.rec.name]
		if s.goodbye {
			if p != nil {
				delete(r.peers, s.rec.name)
				changed[p.rec.target] = true
				r.log.Info("mdns: goodbye", "instance", s.rec.name, "app", p.rec.target.String(), "addr", p.rec.addr)
			}
			continue
		}
		ttl := time.Duration(s.ttl) * time.Second
		if p == nil {
			r.peers[s.rec.name] = &peer{rec: s.rec, ttl: ttl, seen: now}
			changed[s.rec.target] = true
			r.log.Info("mdns: new instance", "instance", s.rec.name, "app", s.rec.target.String(),
				"addr", s.rec.addr, "healthy", s.rec.healthy)
			continue
		}
		if p.rec != s.rec {
			changed[p.rec.target] = true
			changed[s.rec.target] = true
			lvl := slog.LevelDebug
			if p.rec.healthy != s.rec.healthy {
				lvl = slog.LevelInfo
			}
			r.log.Log(context.Background(), lvl, "mdns: instance changed", "instance", s.rec.name,
				"app", s.rec.target.String(), "addr", s.rec.addr, "healthy", s.rec.healthy)
		}
		p.rec, p.ttl, p.seen, p.queried = s.rec, ttl, now, false
	}
	r.push(changed)
}

// push gives the Updater the new sets of the changed targets. Called with
// r.mu held (so pushes keep the order of the changes).
func (r *Resolver) push(changed map[discovery.Target]bool) {
	if !r.ready {
		return
	}
	for t := range changed {
		if eps := r.endpoints(t); eps != nil {
			r.u.UpdateTarget(t, eps)
		} else {
			r.u.RemoveTarget(t)
		}
	}
}

// endpoints returns the healthy endpoints of t, sorted by address; an empty
// non-nil slice when t has instances but none healthy (Pick then says "no
// healthy endpoint"), nil when t has no instance. Of several instances with
// the same address (a sidecar restarted on its port before the old record
// expired), the one heard from last decides. Called with r.mu held.
func (r *Resolver) endpoints(t discovery.Target) []discovery.Endpoint {
	var latest map[string]*peer
	for _, p := range r.peers {
		if p.rec.target != t {
			continue
		}
		if latest == nil {
			latest = map[string]*peer{}
		}
		if q := latest[p.rec.addr]; q == nil || p.seen.After(q.seen) {
			latest[p.rec.addr] = p
		}
	}
	if latest == nil {
		return nil
	}
	eps := make([]discovery.Endpoint, 0, len(latest))
	for addr, p := range latest {
		if p.rec.healthy {
			eps = append(eps, discovery.Endpoint{Address: addr})
		}
	}
	slices.SortFunc(eps, func(a, b discovery.Endpoint) int { return strings.Compare(a.Address, b.Address) })
	return eps
}

func (r *Resolver) tickLoop() {
	defer r.wg.Done()
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
		case <-r.kick:
		}
		r.maintain(time.Now())
	}
}

// maintain expires peers, sends refresh queries at 80% of a peer's TTL, and
// announces the local instance when due.
func (r *Resolver) maintain(now time.Time) {
	var queries []string
	var ann *record
	r.mu.Lock()
	changed := map[discovery.Target]bool{}
	for name, p := range r.peers {
		switch {
		case !now.Before(p.expires()):
			delete(r.peers, name)
			changed[p.rec.target] = true
			r.log.Info("mdns: instance expired (no announcement within its TTL)", "instance", name,
				"app", p.rec.target.String(), "addr", p.rec.addr)
		case !p.queried && now.Sub(p.seen) >= p.ttl*4/5:
			p.queried = true
			queries = append(queries, name)
		}
	}
	r.push(changed)
	if r.local != nil {
		due := false
		for len(r.announces) > 0 && !now.Before(r.announces[0]) {
			r.announces, due = r.announces[1:], true
		}
		if !now.Before(r.nextBeat) {
			due = true
		}
		if due {
			r.nextBeat = now.Add(r.cfg.TTL / 3)
			rec := *r.local
			ann = &rec
		}
	}
	r.mu.Unlock()
	for _, q := range queries {
		r.query(q)
	}
	if ann != nil {
		r.announce(*ann, r.ttl)
	}
}

// SetLocalHealth implements discovery.LocalHealthSetter: the announcement's
// health flag follows the local app, sent at once and repeated (the start
// burst), so callers drop an unhealthy instance from their pickers within a
// packet's trip. It does not block.
func (r *Resolver) SetLocalHealth(healthy bool) {
	r.mu.Lock()
	if r.local == nil || r.local.healthy == healthy {
		r.mu.Unlock()
		return
	}
	r.local.healthy = healthy
	now := time.Now()
	r.announces = r.announces[:0]
	for _, d := range startBurst {
		r.announces = append(r.announces, now.Add(d))
	}
	r.mu.Unlock()
	r.log.Info("mdns: local app health changed; announcing", "healthy", healthy)
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Close implements discovery.Resolver: it sends the goodbye (TTL 0) for the
// local instance, twice, stops browsing and closes the socket.
func (r *Resolver) Close() error {
	var err error
	r.closeOnce.Do(func() {
		close(r.done)
		if local, ok := r.localRecord(); ok {
			r.announce(local, 0)
			time.Sleep(20 * time.Millisecond)
			r.announce(local, 0)
			r.log.Info("mdns: goodbye sent", "instance", local.name)
		}
		if cerr := r.conn.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = fmt.Errorf("mdns: close: %w", cerr)
		}
		r.wg.Wait()
	})
	return err
}
