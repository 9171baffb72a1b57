package discovery_test

// The numbers of the kubernetes backend, against the real API server.
// Each benchmark does its whole measurement once (run with -benchtime 1x):
//
//	go test -run '^$' -bench . -benchtime 1x ./tests/kubernetes/discovery/

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshd/meshd/discovery"
	kdisc "github.com/meshd/meshd/discovery/kubernetes"
	"github.com/meshd/meshd/tests/harness"
)

// BenchmarkSliceChangeToPickers: one EndpointSlice changes 100 times; for
// each change, the time from the API call until every one of 3 callers'
// pickers (each its own resolver and connection, as 3 sidecars) holds the
// new endpoint. Reports p50 and p99 in ms.
func BenchmarkSliceChangeToPickers(b *testing.B) {
	k := harness.StartKube(b)
	cs := fastClient(b, k)
	ensureNamespace(b, cs, "shop")
	applySlice(b, cs, sliceFor("shop", "orders-1", "orders", readyEP("10.5.0.1")))
	tg := discovery.Target{AppID: "orders", Namespace: "shop"}
	const callers, changes = 3, 100
	type seen struct {
		addr string
		at   time.Time
	}
	events := make(chan seen, 1024)
	for range callers {
		c, _ := observer(b, k, "shop", "")
		c.Subscribe(func(ev discovery.Event) {
			if ev.Kind == discovery.EventUpdated && ev.Target == tg {
				for _, e := range c.Endpoints(tg) {
					events <- seen{e.Address, time.Now()}
				}
			}
		})
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := range changes {
		want := fmt.Sprintf("10.5.%d.%d", 1+i/250, 1+i%250)
		t0 := time.Now()
		applySlice(b, cs, sliceFor("shop", "orders-1", "orders", readyEP(want)))
		got := 0
		timeout := time.After(10 * time.Second)
		for got < callers {
			select {
			case s := <-events:
				if s.addr == fmt.Sprintf("%s:%d", want, internalPort) {
					got++
					if got == callers {
						lat = append(lat, s.at.Sub(t0))
					}
				}
			case <-timeout:
				b.Fatalf("change %d: %d of %d pickers updated after 10s", i, got, callers)
			}
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
	b.Logf("EndpointSlice change -> %d pickers updated, %d changes: p50 %s, p99 %s, max %s",
		callers, changes, p50, p99, lat[len(lat)-1])
}

// BenchmarkInformerMemory: 1,000 headless Services, each with one
// EndpointSlice of 5 endpoints, in the sidecar's namespace. Reports the
// heap a resolver adds once it has synced (MB, after GC), the time to its
// first complete state, and the EndpointSlice watches it holds open at
// the API server (apiserver_longrunning_requests).
func BenchmarkInformerMemory(b *testing.B) {
	const services, perService = 1000, 5
	k := harness.StartKube(b)
	cs := fastClient(b, k)
	ensureNamespace(b, cs, "big")
	ctx := context.Background()
	var wg sync.WaitGroup
	work := make(chan int)
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				app := fmt.Sprintf("app-%04d", i)
				svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: "big", Labels: map[string]string{kdisc.DefaultAppIDLabel: app}},
					Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Name: kdisc.DefaultPortName, Port: internalPort}}}}
				if _, err := cs.CoreV1().Services("big").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
					errs <- err
					return
				}
				var eps []ep
				for j := range perService {
					eps = append(eps, readyEP(fmt.Sprintf("10.%d.%d.%d", 10+i/250, i%250, 1+j)))
				}
				if _, err := cs.DiscoveryV1().EndpointSlices("big").Create(ctx, sliceFor("big", app+"-x1", app, eps...), metav1.CreateOptions{}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	began := time.Now()
	for i := range services {
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	b.Logf("created %d Services and slices of %d endpoints in %s", services, perService, time.Since(began).Round(time.Millisecond))

	baseWatches := watchers(b, k)
	heap := func() uint64 {
		var ms runtime.MemStats
		for range 3 {
			runtime.GC()
		}
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	b.ResetTimer()
	c := discovery.NewCache(discovery.Options{Logger: slog.New(slog.DiscardHandler)})
	defer c.Close()
	t0 := time.Now()
	bctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	r, err := c.Build(bctx, kdisc.Name, discovery.BuildOptions{
		ConfigFile: resolverConfig(b, "kubeconfig: "+k.Kubeconfig+"\n"),
		Logger:     slog.New(slog.DiscardHandler),
		Local:      discovery.LocalInstance{Target: discovery.Target{AppID: "me", Namespace: "big"}}})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	sync := time.Since(t0)
	b.StopTimer()
	if n := len(c.Targets()); n != services {
		b.Fatalf("%d targets after the first sync, want %d", n, services)
	}
	after := heap()
	time.Sleep(500 * time.Millisecond) // let the watch register
	w := watchers(b, k) - baseWatches
	mb := (float64(after) - float64(before)) / (1 << 20)
	b.ReportMetric(mb, "heap-MB")
	b.ReportMetric(float64(sync.Milliseconds()), "sync-ms")
	b.ReportMetric(float64(w), "watches")
	b.Logf("%d Services x %d endpoints: heap +%.1f MB per sidecar (resolver, informer store and Cache), first complete state in %s, %d EndpointSlice watch(es) at the API server",
		services, perService, mb, sync.Round(time.Millisecond), w)
	runtime.KeepAlive(r)
	runtime.KeepAlive(c)

	// The same with real meshd sidecars (--insecure: no sentry needed):
	// one in the namespace of 1,000 apps, one in an empty namespace; their
	// own metrics tell the heap after start-up (go_memstats_heap_inuse_bytes,
	// sampled after GC settles) and the resident set.
	ensureNamespace(b, cs, "empty")
	bins := harness.Build(b)
	base := watchers(b, k)
	empty := startInsecureSidecar(b, bins, k, "empty")
	big := startInsecureSidecar(b, bins, k, "big")
	time.Sleep(500 * time.Millisecond)
	sw := watchers(b, k) - base
	time.Sleep(5 * time.Second) // a GC cycle or two after the first list
	he, hb := metric(b, empty, "go_memstats_heap_inuse_bytes"), metric(b, big, "go_memstats_heap_inuse_bytes")
	re, rb := metric(b, empty, "process_resident_memory_bytes"), metric(b, big, "process_resident_memory_bytes")
	b.ReportMetric((hb-he)/(1<<20), "sidecar-heap-MB")
	b.ReportMetric((rb-re)/(1<<20), "sidecar-rss-MB")
	b.ReportMetric(float64(sw)/2, "watches/sidecar")
	b.Logf("real meshd: heap in use %.1f MB with 1,000 apps vs %.1f MB with none (+%.1f MB); RSS %.1f vs %.1f MB (+%.1f MB); %d watches for 2 sidecars",
		hb/(1<<20), he/(1<<20), (hb-he)/(1<<20), rb/(1<<20), re/(1<<20), (rb-re)/(1<<20), sw)
}

func startInsecureSidecar(b *testing.B, bins harness.Binaries, k *harness.Kube, ns string) harness.SidecarPorts {
	b.Helper()
	p := harness.NewSidecarPorts(b)
	sc := harness.Start(b, "meshd-"+ns, bins.Meshd, "--app-id", "probe", "--namespace", ns, "--insecure",
		"--http-port", strconv.Itoa(p.HTTP), "--grpc-port", strconv.Itoa(p.GRPC),
		"--internal-port", strconv.Itoa(p.Internal), "--metrics-port", strconv.Itoa(p.Metrics), "--listen-address", "127.0.0.1",
		"--resolver", "kubernetes", "--resolver-config", resolverConfig(b, "kubeconfig: "+k.Kubeconfig+"\n"))
	harness.WaitHTTP(b, "http://127.0.0.1:"+strconv.Itoa(p.HTTP)+"/v1.0/healthz", http.StatusNoContent, 60*time.Second)
	_ = sc
	return p
}

// metric reads one unlabelled gauge from a sidecar's /metrics.
func metric(b *testing.B, p harness.SidecarPorts, name string) float64 {
	b.Helper()
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(p.Metrics) + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				b.Fatal(err)
			}
			return f
		}
	}
	b.Fatalf("no %s in the sidecar's metrics", name)
	return 0
}
