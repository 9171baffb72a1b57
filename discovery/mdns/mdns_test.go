package mdns

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/tests/netnstest"
)

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func testConfig(ttl time.Duration) Config {
	c, err := ParseConfig(nil)
	if err != nil {
		panic(err)
	}
	c.TTL, c.BrowseWait = ttl, 100*time.Millisecond
	return c
}

// node is one resolver with its cache and a feed of the cache's events.
type node struct {
	r      *Resolver
	cache  *discovery.Cache
	events chan discovery.Event
}

func startNode(t testing.TB, cfg Config, app, ns, addr string) *node {
	t.Helper()
	netnstest.Guard(t)
	n := &node{cache: discovery.NewCache(discovery.Options{Logger: quiet()}), events: make(chan discovery.Event, 1024)}
	t.Cleanup(func() { n.cache.Close() })
	n.cache.Subscribe(func(ev discovery.Event) {
		select {
		case n.events <- ev:
		default:
		}
	})
	var local discovery.LocalInstance
	if app != "" {
		local = discovery.LocalInstance{Target: discovery.Target{AppID: app, Namespace: ns}, Address: addr}
	}
	r, err := Start(context.Background(), cfg, local, quiet(), n.cache)
	if err != nil {
		t.Fatal(err)
	}
	n.r = r
	t.Cleanup(func() { r.Close() })
	return n
}

func addrs(eps []discovery.Endpoint) []string {
	out := make([]string, len(eps))
	for i, e := range eps {
		out[i] = e.Address
	}
	return out
}

// waitReady waits until Ready(t) is exactly want (sorted) and returns how
// long it took.
func (n *node) waitReady(tb testing.TB, tg discovery.Target, d time.Duration, want ...string) time.Duration {
	tb.Helper()
	start := time.Now()
	for {
		got := addrs(n.cache.Ready(tg))
		if slices.Equal(got, want) {
			return time.Since(start)
		}
		if time.Since(start) > d {
			tb.Fatalf("%s: ready %v, want %v after %s", tg, got, want, d)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

var (
	orders     = discovery.Target{AppID: "orders", Namespace: "default"}
	ordersProd = discovery.Target{AppID: "orders", Namespace: "prod"}
)

func TestRegisteredAsMDNS(t *testing.T) {
	if b := discovery.Get(Name); b == nil || b.Name() != "mdns" {
		t.Fatalf("discovery.Get(%q) = %v", Name, b)
	}
}

func TestSeeEachOtherNamespaceAware(t *testing.T) {
	if !netnstest.Run(t, netnstest.Opts{}) {
		return
	}
	cfg := testConfig(5 * time.Second)
	a := startNode(t, cfg, "orders", "default", "127.0.0.1:1001")
	b := startNode(t, cfg, "orders", "prod", "127.0.0.1:1002")
	c := startNode(t, cfg, "orders", "default", "127.0.0.1:1003")
	for _, n := range []*node{a, b, c} {
		n.waitReady(t, orders, 2*time.Second, "127.0.0.1:1001", "127.0.0.1:1003")
		n.waitReady(t, ordersProd, 2*time.Second, "127.0.0.1:1002")
	}
	// c started last, yet knew a and b when Start returned (its first browse).
	if got := addrs(c.cache.Endpoints(ordersProd)); !slices.Equal(got, []string{"127.0.0.1:1002"}) {
		t.Fatalf("c's first state misses b: %v", got)
	}
	if n := len(a.cache.Targets()); n != 2 {
		t.Fatalf("a knows %d targets, want 2", n)
	}
}

func TestBrowseOnlyNodeAnnouncesNothing(t *testing.T) {
	if !netnstest.Run(t, netnstest.Opts{}) {
		return
	}
	cfg := testConfig(5 * time.Second)
	watcher := startNode(t, cfg, "", "", "")
	a := startNode(t, cfg, "orders", "default", "127.0.0.1:1001")
	watcher.waitReady(t, orders, 2*time.Second, "127.0.0.1:1001")
	if n := len(a.cache.Targets()); n != 1 {
		t.Fatalf("the browse-only node was announced: a knows %v", a.cache.Targets())
	}
}

func TestGoodbyeRemovesAtOnce(t *testing.T) {
	if !netnstest.Run(t, netnstest.Opts{}) {
		return
	}
	cfg := testConfig(30 * time.Second) // long TTL: only the goodbye can explain a quick removal
	a := startNode(t, cfg, "orders", "default", "127.0.0.1:1001")
	b := startNode(t, cfg, "orders", "default", "127.0.0.1:1002")
	a.waitReady(t, orders, 2*time.Second, "127.0.0.1:1001", "127.0.0.1:1002")
	start := time.Now()
	if err := b.r.Close(); err != nil {
		t.Fatal(err)
	}
	if d := a.waitReady(t, orders, 500*time.Millisecond, "127.0.0.1:1001"); d > 0 {
		t.Logf("goodbye took effect %s after Close began", time.Since(start))
	}
	// The last instance leaving forgets the target.
	if err := a.r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.r.Close(); err != nil { // twice is fine
		t.Fatal(err)
	}
}

func TestLastGoodbyeForgetsTheTarget(t *testing.T) {
	if !netnstest.Run(t, netnstest.Opts{}) {
		return
	}
	cfg := testConfig(30 * time.Second)
	watcher := startNode(t, cfg, "", "", "")
	b := startNode(t, cfg, "orders", "prod", "127.0.0.1:1002")
	watcher.waitReady(t, ordersProd, 2*time.Second, "127.0.0.1:1002")
	b.r.Close()
	deadline := time.Now().Add(500 * time.Millisecond)
	for {
		if _, err := watcher.cache.Pick(ordersProd); errors.Is(err, discovery.ErrUnknownTarget) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("orders.prod still known after its only instance said goodbye")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// crash stops r without a goodbye, as kill -9 would.
func crash(r *Resolver) {
	r.mu.Lock()
	r.local = nil
	r.mu.Unlock()
	r.Close()
}

func TestDeadInstanceExpiresWithinTTL(t *testing.T) {
	if !netnstest.Run(t, netnstest.Opts{}) {
		return
	}
	cfg := testConfig(2 * time.Second)
	a := startNode(t, cfg, "orders", "default", "127.0.0.1:1001")
	b := startNode(t, cfg, "orders", "default", "127.0.0.1:1002")
	a.waitReady(t, orders, 2*time.Second, "127.0.0.1:1001", "127.0.0.1:1002")
	// Alive instances outlive several TTLs (re-announcement works).
	time.Sleep(3 * cfg.TTL)
	a.waitReady(t, orders, 0, "127.0.0.1:1001", "127.0.0.1:1002")
	crash(b.r)
	start := time.Now()
	time.Sleep(cfg.TTL / 3)
	a.waitReady(t, orders, 0, "127.0.0.1:1001", "127.0.0.1:1002") // not before its time
	a.waitReady(t, orders, cfg.TTL+500*time.Millisecond, "127.0.0.1:1001")
	if d := time.Since(start); d > cfg.TTL+200*time.Millisecond {
		t.Fatalf("dead instance dropped after %s, TTL %s", d, cfg.TTL)
	}
}

func TestHealthFollowsTheLocalApp(t *testing.T) {
	if !netnstest.Run(t, netnstest.Opts{}) {
		return
	}
	cfg := testConfig(30 * time.Second)
	a := startNode(t, cfg, "orders", "default", "127.0.0.1:1001")
	b := startNode(t, cfg, "orders", "default", "127.0.0.1:1002")
	a.waitReady(t, orders, 2*time.Second, "127.0.0.1:1001", "127.0.0.1:1002")
	b.r.SetLocalHealth(false)
	a.waitReady(t, orders, 500*time.Millisecond, "127.0.0.1:1001")
	if got := addrs(a.cache.Endpoints(orders)); !slices.Equal(got, []string{"127.0.0.1:1001"}) {
		t.Fatalf("endpoints %v", got)
	}
	a.r.SetLocalHealth(false)
	a.waitReady(t, orders, 500*time.Millisecond)
	b.waitReady(t, orders, 500*time.Millisecond)
	if _, err := a.cache.Pick(orders); !errors.Is(err, discovery.ErrNoHealthyEndpoint) {
		t.Fatalf("all unhealthy: Pick error %v, want ErrNoHealthyEndpoint", err)
	}
	b.r.SetLocalHealth(true)
	a.waitReady(t, orders, 500*time.Millisecond, "127.0.0.1:1002")
	// A node that starts now learns the current health, not the first one.
	c := startNode(t, cfg, "", "", "")
	c.waitReady(t, orders, 0, "127.0.0.1:1002")
}

func TestNoMulticastInterface(t *testing.T) {
	if !netnstest.Run(t, netnstest.Opts{NoLoopbackMulticast: true}) {
		return
	}
	netnstest.Guard(t)
	c := discovery.NewCache(discovery.Options{Logger: quiet()})
	defer c.Close()
	_, err := discovery.Build(context.Background(), "mdns", discovery.BuildOptions{Logger: quiet(),
		Local: discovery.LocalInstance{Target: orders, Address: "127.0.0.1:1001"}}, c)
	if !errors.Is(err, ErrNoMulticast) {
		t.Fatalf("Build error %v, want ErrNoMulticast", err)
	}
	for _, want := range []string{"no multicast-capable interface", "ip link set lo multicast on", "ip route add 224.0.0.0/4 dev lo"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	cfg := testConfig(5 * time.Second)
	cfg.Interfaces = []string{"lo"}
	if _, err := Start(context.Background(), cfg, discovery.LocalInstance{}, quiet(), c); !errors.Is(err, ErrNoMulticast) ||
		!strings.Contains(err.Error(), "lo is not up and multicast-capable") {
		t.Fatalf("named lo: %v", err)
	}
	cfg.Interfaces = []string{"nosuch0"}
	if _, err := Start(context.Background(), cfg, discovery.LocalInstance{}, quiet(), c); err == nil ||
		!strings.Contains(err.Error(), `interface "nosuch0" not found`) {
		t.Fatalf("missing interface: %v", err)
	}
}

func TestBadLocalAddress(t *testing.T) {
	c := discovery.NewCache(discovery.Options{Logger: quiet()})
	defer c.Close()
	_, err := Start(context.Background(), testConfig(5*time.Second),
		discovery.LocalInstance{Target: orders, Address: "nowhere"}, quiet(), c)
	if err == nil || !strings.Contains(err.Error(), "--advertise-address") {
		t.Fatalf("error %v", err)
	}
}

func TestParseResponseRejectsBadRecords(t *testing.T) {
	const svc = "_meshd._tcp.local."
	good := record{name: "orders-1." + svc, target: orders, addr: "10.0.0.1:50002", healthy: true}
	txt := func(kv ...string) dns.RR {
		return &dns.TXT{Hdr: dns.RR_Header{Name: "x-1." + svc, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 5}, Txt: kv}
	}
	base := []string{"v=1", "app=orders", "ns=default", "addr=10.0.0.1:50002", "health=1"}
	with := func(i int, kv string) []string { s := slices.Clone(base); s[i] = kv; return s }
	for _, tc := range []struct {
		name string
		rr   dns.RR
	}{
		{"other version", txt(with(0, "v=2")...)},
		{"no version", txt(base[1:]...)},
		{"app with dot", txt(with(1, "app=a.b")...)},
		{"empty app", txt(with(1, "app=")...)},
		{"namespace with slash", txt(with(2, "ns=a/b")...)},
		{"address without port", txt(with(3, "addr=10.0.0.1")...)},
		{"port zero", txt(with(3, "addr=10.0.0.1:0")...)},
		{"port too big", txt(with(3, "addr=10.0.0.1:70000")...)},
		{"bad host", txt(with(3, "addr=a_b:1")...)},
		{"health maybe", txt(with(4, "health=maybe")...)},
		{"other service", &dns.TXT{Hdr: dns.RR_Header{Name: "x-1._other._tcp.local.", Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 5}, Txt: base}},
		{"bare service name", &dns.TXT{Hdr: dns.RR_Header{Name: svc, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 5}, Txt: base}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &dns.Msg{MsgHdr: dns.MsgHdr{Response: true}, Answer: []dns.RR{tc.rr}}
			if got := parseResponse(m, svc); len(got) != 0 {
				t.Fatalf("accepted %v", got)
			}
		})
	}
	// The announcement of a record parses back to it, also packed and unpacked.
	m := &dns.Msg{MsgHdr: dns.MsgHdr{Response: true}, Answer: good.records(svc, 5)}
	buf, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	var back dns.Msg
	if err := back.Unpack(buf); err != nil {
		t.Fatal(err)
	}
	got := parseResponse(&back, svc)
	if len(got) != 1 || got[0].rec != good || got[0].ttl != 5 || got[0].goodbye {
		t.Fatalf("round trip: %+v", got)
	}
	bye := parseResponse(&dns.Msg{MsgHdr: dns.MsgHdr{Response: true}, Answer: good.records(svc, 0)}, svc)
	if len(bye) != 2 || !bye[0].goodbye || !bye[1].goodbye || bye[0].rec.name != good.name {
		t.Fatalf("goodbye: %+v", bye)
	}
}

func FuzzParseResponse(f *testing.F) {
	const svc = "_meshd._tcp.local."
	good := record{name: "orders-1." + svc, target: orders, addr: "10.0.0.1:50002", healthy: true}
	m := &dns.Msg{MsgHdr: dns.MsgHdr{Response: true}, Answer: good.records(svc, 5)}
	buf, _ := m.Pack()
	f.Add(buf)
	f.Fuzz(func(t *testing.T, data []byte) {
		var m dns.Msg
		if m.Unpack(data) != nil {
			return
		}
		for _, s := range parseResponse(&m, svc) {
			if s.goodbye {
				continue
			}
			if !validAddr(s.rec.addr) || s.rec.target.AppID == "" || !strings.HasSuffix(s.rec.name, "."+svc) {
				t.Fatalf("accepted %+v", s)
			}
		}
	})
}

// BenchmarkPick is the hot-path cost with the cache fed by mDNS: the
// resolver never runs on Pick.
func BenchmarkPick(b *testing.B) {
	if !netnstest.Run(b, netnstest.Opts{}) {
		return
	}
	cfg := testConfig(30 * time.Second)
	a := startNode(b, cfg, "orders", "default", "127.0.0.1:1001")
	startNode(b, cfg, "orders", "default", "127.0.0.1:1002")
	startNode(b, cfg, "orders", "default", "127.0.0.1:1003")
	a.waitReady(b, orders, 2*time.Second, "127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003")
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := a.cache.Pick(orders); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkChangeToPickers is the time from an instance's change (its app
// turns unhealthy, or healthy again) to the moment the pickers of three
// other sidecars all reflect it. ns/op is that latency.
func BenchmarkChangeToPickers(b *testing.B) {
	if !netnstest.Run(b, netnstest.Opts{}) {
		return
	}
	cfg := testConfig(30 * time.Second)
	src := startNode(b, cfg, "orders", "default", "127.0.0.1:1001")
	var callers []*node
	for range 3 {
		callers = append(callers, startNode(b, cfg, "", "", ""))
	}
	for _, c := range callers {
		c.waitReady(b, orders, 2*time.Second, "127.0.0.1:1001")
	}
	var worst atomic.Int64
	b.ResetTimer()
	for i := range b.N {
		healthy := i%2 == 1
		want := 0
		if healthy {
			want = 1
		}
		start := time.Now()
		src.r.SetLocalHealth(healthy)
		for _, c := range callers {
			for len(c.cache.Ready(orders)) != want {
				if time.Since(start) > 2*time.Second {
					b.Fatalf("caller did not see health=%v within 2s", healthy)
				}
				time.Sleep(50 * time.Microsecond)
			}
		}
		if d := int64(time.Since(start)); d > worst.Load() {
			worst.Store(d)
		}
	}
	b.ReportMetric(float64(worst.Load())/1e6, "worst-ms")
}
