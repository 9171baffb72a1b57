// Package xdsbench measures the control plane at scale by simulation (make
// bench-xds; not part of make test): N simulated ADS clients, each its own
// gRPC stream with its own node (many streams share a connection, as
// sidecars would not, but the server's work per stream is the same), against
// cmd/controlplane serving M apps of K endpoints from a static file. One
// endpoint of one app changes at a time; every client must receive the
// change and ACK it.
//
// Environment: XDS_CLIENTS (2000), XDS_APPS (1000), XDS_EPS (5),
// XDS_MODE (delta or sotw), XDS_CHANGES (10), XDS_STREAMS_PER_CONN (100),
// XDS_WATCH (10).
//
// Each client subscribes, as a meshd sidecar does on demand, to the
// endpoints of XDS_WATCH apps: the XDS_WATCH/2 "hot" apps every client
// calls (app0000...) and XDS_WATCH/2 apps of its own; the changes rotate
// over the hot apps, so every change has every client watching it (the
// worst case). It also subscribes to its PolicySets.
package xdsbench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/discovery/xds/policypb"
	"github.com/meshd/meshd/tests/harness"
	"github.com/meshd/meshd/xds"
)

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return def
}

// change is the one change in flight.
type change struct {
	name    string // the CLA that changed
	start   time.Time
	pending atomic.Int64
	done    chan struct{}
	mu      sync.Mutex
	acks    []time.Duration // change → ACK sent, one per client
	bytes   atomic.Int64    // response bytes the clients received for it
}

type sim struct {
	apps    int
	watch   int
	cur     atomic.Pointer[change]
	initial sync.WaitGroup
}

// names are the CLAs client id subscribes to.
func (s *sim) names(id int) []string {
	hot := s.watch / 2
	out := make([]string, 0, s.watch)
	for j := range hot {
		out = append(out, fmt.Sprintf("app%04d.default", j))
	}
	for j := range s.watch - hot {
		out = append(out, fmt.Sprintf("app%04d.default", hot+(id*(s.watch-hot)+j)%(s.apps-hot)))
	}
	return out
}

func (s *sim) arrived(c *change, size int, ackSent time.Time) {
	c.bytes.Add(int64(size))
	c.mu.Lock()
	c.acks = append(c.acks, ackSent.Sub(c.start))
	c.mu.Unlock()
	if c.pending.Add(-1) == 0 {
		close(c.done)
	}
}

// delta is one simulated sidecar on a delta stream: it asks for what meshd
// asks for (every ClusterLoadAssignment, its PolicySets) and ACKs.
func (s *sim) delta(ctx context.Context, conn *grpc.ClientConn, id int) error {
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	node := &corev3.Node{Id: "sim-" + strconv.Itoa(id)}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: policypb.TypeURL, ResourceNamesSubscribe: []string{"*"}}); err != nil {
		return err
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.TypeURLs[1], ResourceNamesSubscribe: s.names(id)}); err != nil {
		return err
	}
	have, synced := 0, false
	var last *change
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		size := proto.Size(resp)
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}); err != nil {
			return err
		}
		sent := time.Now()
		if resp.GetTypeUrl() != xds.TypeURLs[1] {
			continue
		}
		if !synced {
			if have += len(resp.GetResources()); have >= s.watch {
				synced = true
				s.initial.Done()
			}
			continue
		}
		c := s.cur.Load()
		if c == nil || c == last {
			continue
		}
		for _, r := range resp.GetResources() {
			if r.GetName() == c.name {
				last = c
				s.arrived(c, size, sent)
				break
			}
		}
	}
}

// sotw is one simulated client on a state-of-the-world stream (wildcard
// EDS): every change resends every ClusterLoadAssignment it sees.
func (s *sim) sotw(ctx context.Context, conn *grpc.ClientConn, id int) error {
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	node := &corev3.Node{Id: "sim-" + strconv.Itoa(id)}
	tu := xds.TypeURLs[1]
	names := s.names(id)
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: tu, ResourceNames: names}); err != nil {
		return err
	}
	synced := false
	var last *change
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		size := proto.Size(resp)
		if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: tu, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(), ResourceNames: names}); err != nil {
			return err
		}
		sent := time.Now()
		if !synced {
			if len(resp.GetResources()) >= s.watch {
				synced = true
				s.initial.Done()
			}
			continue
		}
		if c := s.cur.Load(); c != nil && c != last {
			// Every subscribed CLA comes again (the type's version moved);
			// the change is among them.
			last = c
			s.arrived(c, size, sent)
		}
	}
}

func writeApps(t testing.TB, path string, apps, eps, changed, port int) {
	t.Helper()
	list := make([]harness.StaticApp, apps)
	for a := range apps {
		addrs := make([]string, eps)
		for e := range eps {
			p := 20000 + e
			if a == changed && e == 0 {
				p = port
			}
			addrs[e] = fmt.Sprintf("10.%d.%d.%d:%d", a/250, a%250, e+1, p)
		}
		list[a] = harness.StaticApp{AppID: fmt.Sprintf("app%04d", a), Namespace: "default", Addresses: addrs}
	}
	harness.WriteStatic(t, path, list...)
}

// procStat reads a process's RSS, peak RSS (KiB) and CPU time.
func procStat(t testing.TB, pid int) (rss, hwm int64, cpu time.Duration) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "VmRSS:" {
			rss, _ = strconv.ParseInt(f[1], 10, 64)
		}
		if len(f) >= 2 && f[0] == "VmHWM:" {
			hwm, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stt, _ := strconv.ParseInt(f[12], 10, 64)
	return rss, hwm, time.Duration(ut+stt) * 10 * time.Millisecond // USER_HZ 100
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func BenchmarkXDSScale(b *testing.B) {
	clients, apps, eps := envInt("XDS_CLIENTS", 2000), envInt("XDS_APPS", 1000), envInt("XDS_EPS", 5)
	changes, perConn, watch := envInt("XDS_CHANGES", 10), envInt("XDS_STREAMS_PER_CONN", 100), envInt("XDS_WATCH", 10)
	mode := os.Getenv("XDS_MODE")
	if mode == "" {
		mode = "delta"
	}
	bins := harness.Build(b)
	s := harness.StartSentry(b, bins, "")
	file := filepath.Join(b.TempDir(), "apps.yaml")
	writeApps(b, file, apps, eps, -1, 0)
	cp := harness.StartControlPlane(b, bins, s, "--resolver", "static", "--resolver-config", file, "--log-level", "warn")
	rss0, _, _ := procStat(b, cp.Pid())

	src := s.Source(b, "bench", "default")
	cpID := spiffeid.RequireFromString(harness.ControlPlaneID)
	tlsCfg := tlsconfig.MTLSClientConfig(src, src, certs.RequireServerAuth(tlsconfig.AuthorizeID(cpID)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch = min(watch, apps)
	sm := &sim{apps: apps, watch: watch}
	sm.initial.Add(clients)
	var conns []*grpc.ClientConn
	var failed atomic.Int64
	var firstErr atomic.Value
	syncStart := time.Now()
	for i := range clients {
		if i%perConn == 0 {
			conn, err := grpc.NewClient("passthrough:///"+cp.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
				grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			conns = append(conns, conn)
		}
		conn := conns[len(conns)-1]
		go func() {
			run := sm.delta
			if mode == "sotw" {
				run = sm.sotw
			}
			if err := run(ctx, conn, i); err != nil && ctx.Err() == nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
		}()
	}
	synced := make(chan struct{})
	go func() { sm.initial.Wait(); close(synced) }()
	select {
	case <-synced:
	case <-time.After(10 * time.Minute):
		b.Fatalf("initial sync not done after 10m (%d streams failed: %v)", failed.Load(), firstErr.Load())
	}
	syncTook := time.Since(syncStart)
	rss1, _, cpu1 := procStat(b, cp.Pid())

	var all, lasts []time.Duration
	var bytes int64
	for i := range changes {
		app := i % max(1, watch/2) // a hot app: every client watches it
		c := &change{name: fmt.Sprintf("app%04d.default", app), done: make(chan struct{})}
		c.pending.Store(int64(clients))
		sm.cur.Store(c)
		c.start = time.Now()
		writeApps(b, file, apps, eps, app, 30000+i)
		select {
		case <-c.done:
		case <-time.After(2 * time.Minute):
			b.Fatalf("change %d: %d of %d clients still without it after 2m (%d streams failed: %v)", i, c.pending.Load(), clients, failed.Load(), firstErr.Load())
		}
		c.mu.Lock()
		all = append(all, c.acks...)
		lasts = append(lasts, pct(c.acks, 1))
		c.mu.Unlock()
		bytes += c.bytes.Load()
		time.Sleep(200 * time.Millisecond) // let the server settle between changes
	}
	rss2, hwm, cpu2 := procStat(b, cp.Pid())
	if failed.Load() > 0 {
		b.Errorf("%d streams failed: %v", failed.Load(), firstErr.Load())
	}
	cpuPer := (cpu2 - cpu1) / time.Duration(changes)
	perClient := float64(bytes) / float64(changes) / float64(clients)
	b.ReportMetric(float64(hwm)/1024, "cp-peak-MB")
	b.ReportMetric(float64(rss2)/1024, "cp-rss-MB")
	b.ReportMetric(float64(cpuPer.Microseconds())/1000, "cp-cpu-ms/change")
	b.ReportMetric(float64(pct(all, 0.5).Microseconds())/1000, "ack-p50-ms")
	b.ReportMetric(float64(pct(all, 0.99).Microseconds())/1000, "ack-p99-ms")
	b.ReportMetric(float64(pct(lasts, 0.5).Microseconds())/1000, "last-ack-p50-ms")
	b.ReportMetric(float64(pct(lasts, 0.99).Microseconds())/1000, "last-ack-p99-ms")
	b.ReportMetric(perClient, "bytes/change/client")
	b.Logf("mode=%s clients=%d apps=%d endpoints/app=%d watched apps/client=%d changes=%d streams/conn=%d", mode, clients, apps, eps, watch, changes, perConn)
	b.Logf("control plane RSS: %.1f MB idle, %.1f MB after sync, %.1f MB at the end, peak %.1f MB; initial sync of all clients %s",
		float64(rss0)/1024, float64(rss1)/1024, float64(rss2)/1024, float64(hwm)/1024, syncTook.Round(time.Millisecond))
	b.Logf("per change (file write → client ACK sent; includes the static file watch's 100ms and the control plane's 50ms debounce): "+
		"all ACKs p50 %s p99 %s; last ACK p50 %s p99 %s (max %s); CPU %s; %.0f bytes per client (%d clients)",
		pct(all, 0.5).Round(time.Millisecond), pct(all, 0.99).Round(time.Millisecond),
		pct(lasts, 0.5).Round(time.Millisecond), pct(lasts, 0.99).Round(time.Millisecond), pct(lasts, 1).Round(time.Millisecond),
		cpuPer.Round(time.Millisecond), perClient, clients)
}
