package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/meshd/meshd/discovery"
	_ "github.com/meshd/meshd/discovery/consul"     // --resolver consul
	_ "github.com/meshd/meshd/discovery/kubernetes" // --resolver kubernetes
	_ "github.com/meshd/meshd/discovery/mdns"       // --resolver mdns
	_ "github.com/meshd/meshd/discovery/static"     // --resolver static
	"github.com/meshd/meshd/sidecar/admin"
)

// Where a sidecarStatus comes from.
const (
	whereLocal    = "local"
	whereResolver = "resolver"
)

// remoteUnknown are the fields of an instance found only through the
// resolver: its admin endpoint listens on loopback of its own host, out of
// meshctl's reach, so they are not known (and left empty, never guessed).
var remoteUnknown = []string{"ready", "appHealth", "spiffeId", "httpAddress", "grpcAddress", "adminAddress",
	"certExpiry", "policyMode", "policyDefault", "calls", "errors", "policyDenied"}

// notReadyUnknown are the fields of a local sidecar whose admin endpoint
// does not answer (before its first certificate, or turned off).
var notReadyUnknown = []string{"appHealth", "spiffeId", "certExpiry", "policyMode", "policyDefault", "calls", "errors", "policyDenied"}

// meshQuery is what list, status and the dashboard read.
type meshQuery struct {
	home string
	// window: calls/s are measured over it (two readings); 0: no rates.
	window time.Duration
	// resolver and resolverConfig, when resolver is not "", also list every
	// instance of every app the resolver knows (as meshd takes them).
	resolver, resolverConfig string
	// settle bounds the wait for a resolver that finds apps in the
	// background (consul's catalog) to stop finding new ones.
	settle time.Duration
}

// sidecars reads the run records of h and asks each live sidecar.
func sidecars(ctx context.Context, h string, window time.Duration) ([]sidecarStatus, error) {
	return readMesh(ctx, meshQuery{home: h, window: window})
}

// readMesh lists the sidecars of `meshctl run` on this machine, read
// through their admin endpoints, and with a resolver every other instance
// the resolver lists.
func readMesh(ctx context.Context, q meshQuery) ([]sidecarStatus, error) {
	var mr *meshResolver
	if q.resolver != "" {
		var err error
		if mr, err = openResolver(ctx, q); err != nil {
			return nil, err
		}
		defer mr.Close()
	}
	return readMeshWith(ctx, q, mr)
}

// readMeshWith is readMesh with a resolver kept open by the caller (nil:
// none): the dashboard's, read every interval.
func readMeshWith(ctx context.Context, q meshQuery, mr *meshResolver) ([]sidecarStatus, error) {
	out, err := localSidecars(q.home)
	if err != nil {
		return nil, err
	}
	if mr != nil {
		out = append(out, notLocal(mr.instances(), out)...)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.AppID != b.AppID {
			return a.AppID < b.AppID
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Where != b.Where {
			return a.Where == whereLocal
		}
		if a.MeshdPID != b.MeshdPID {
			return a.MeshdPID < b.MeshdPID
		}
		return a.Internal < b.Internal
	})
	first := make([]*admin.Calls, len(out))
	t0 := time.Now()
	for i := range out {
		if out[i].Where == whereLocal {
			first[i] = readLocalSidecar(ctx, &out[i])
		}
	}
	if q.window <= 0 || len(out) == 0 {
		return out, nil
	}
	select {
	case <-ctx.Done():
		return out, ctx.Err()
	case <-time.After(q.window):
	}
	secs := time.Since(t0).Seconds()
	for i := range out {
		s := &out[i]
		if first[i] == nil {
			continue
		}
		st, err := admin.GetStatus(ctx, s.AdminAddr)
		if err != nil || st.Calls == nil {
			continue
		}
		s.RateOut, s.RateIn = float64(st.Calls.Out-first[i].Out)/secs, float64(st.Calls.In-first[i].In)/secs
	}
	return out, nil
}

// localSidecars are the live run records of h (records whose meshctl has
// gone are skipped).
func localSidecars(h string) ([]sidecarStatus, error) {
	files, err := filepath.Glob(filepath.Join(h, "run", "*.json"))
	if err != nil {
		return nil, err
	}
	out := []sidecarStatus{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // ended meanwhile
		}
		var r runRecord
		if err := json.Unmarshal(b, &r); err != nil || r.PID <= 0 || !alive(r.PID) {
			continue
		}
		metrics := "127.0.0.1:" + strconv.Itoa(r.MetricsPort)
		out = append(out, sidecarStatus{AppID: r.AppID, Namespace: r.Namespace, Where: whereLocal,
			HTTPAddr: "127.0.0.1:" + strconv.Itoa(r.HTTPPort), GRPCAddr: "127.0.0.1:" + strconv.Itoa(r.GRPCPort),
			Internal: "127.0.0.1:" + strconv.Itoa(r.InternalPort), MetricsAddr: metrics,
			// meshctl run leaves the admin endpoint on the metrics port.
			AdminAddr: metrics,
			AppPort:   r.AppPort, MeshctlPID: r.PID, MeshdPID: r.MeshdPID, AppPID: r.AppPID, Command: r.Command, Started: r.Started})
	}
	return out, nil
}

// readLocalSidecar fills s from the sidecar's health and admin endpoints
// and returns its call totals (nil if they could not be read).
func readLocalSidecar(ctx context.Context, s *sidecarStatus) *admin.Calls {
	// Readiness from healthz: it answers, with the reason, even before the
	// sidecar has its certificate (the admin endpoint serves from then on).
	s.Ready, s.NotReady = probe(ctx, "http://"+s.HTTPAddr+"/v1.0/healthz")
	st, err := admin.GetStatus(ctx, s.AdminAddr)
	if err != nil {
		if s.Ready {
			s.Error = err.Error()
		}
		// Before its certificate a sidecar serves only the not-ready
		// answers of healthz.
		s.Unknown = notReadyUnknown
		return nil
	}
	s.AppHealth, s.SPIFFEID = st.App.Health, st.SPIFFEID
	if st.Certificate != nil {
		s.CertExpiry = st.Certificate.NotAfter
	}
	s.PolicyMode, s.PolicyDefault, s.Denied = st.Policy.Mode, st.Policy.Default, float64(st.Policy.Denied)
	if st.Calls == nil {
		s.Unknown = []string{"calls", "errors"}
		return nil
	}
	s.CallsOut, s.CallsIn = float64(st.Calls.Out), float64(st.Calls.In)
	s.ErrorsOut, s.ErrorsIn = float64(st.Calls.ErrorsOut), float64(st.Calls.ErrorsIn)
	return st.Calls
}

// probe GETs a health URL: 2xx is true; otherwise the sidecar's message.
func probe(ctx context.Context, url string) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 == 2 {
		return true, ""
	}
	var e struct{ Message string }
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		return false, e.Message
	}
	return false, resp.Status
}

// meshResolver is a resolver built as meshd would build it (registering
// nothing), following every app it knows.
type meshResolver struct {
	cache *discovery.Cache
	res   discovery.Resolver
}

// openResolver builds q's resolver and, for one that finds apps in the
// background, waits (up to q.settle) until it has found them.
func openResolver(ctx context.Context, q meshQuery) (*meshResolver, error) {
	if discovery.Get(q.resolver) == nil {
		return nil, fmt.Errorf("--resolver %q: meshctl lists the apps of %v", q.resolver, discovery.Names())
	}
	cache := discovery.NewCache(discovery.Options{Logger: slog.New(slog.DiscardHandler)})
	bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := discovery.Build(bctx, q.resolver, discovery.BuildOptions{ConfigFile: q.resolverConfig,
		Logger: slog.New(slog.DiscardHandler), ReadOnly: true}, cache)
	if err != nil {
		cache.Close()
		return nil, fmt.Errorf("--resolver %s: %w", q.resolver, err)
	}
	m := &meshResolver{cache: cache, res: res}
	if aw, ok := res.(discovery.AllWatcher); ok {
		aw.WatchAll()
		settle(ctx, cache, q.settle)
	} else if _, ok := res.(discovery.Watcher); ok {
		m.Close()
		return nil, fmt.Errorf("--resolver %s resolves apps only on demand and cannot list them all", q.resolver)
	}
	return m, nil
}

// instances are every instance of every app the resolver knows now.
func (m *meshResolver) instances() []sidecarStatus {
	var out []sidecarStatus
	for _, t := range m.cache.Targets() {
		for _, ep := range m.cache.Endpoints(t) {
			out = append(out, sidecarStatus{AppID: t.AppID, Namespace: t.Namespace, Where: whereResolver,
				Internal: ep.Address, Unknown: remoteUnknown})
		}
	}
	return out
}

// Close stops the resolver.
func (m *meshResolver) Close() {
	_ = m.res.Close()
	m.cache.Close()
}

// settle waits until the apps and endpoints cache knows have not changed
// for a while (a resolver that finds apps in the background), at most max.
func settle(ctx context.Context, cache *discovery.Cache, max time.Duration) {
	if max <= 0 {
		max = 5 * time.Second
	}
	const quiet = 500 * time.Millisecond
	deadline := time.Now().Add(max)
	last, since := "", time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var sig []string
		for _, t := range cache.Targets() {
			sig = append(sig, t.String()+"="+strconv.Itoa(len(cache.Endpoints(t))))
		}
		slices.Sort(sig)
		cur := fmt.Sprint(sig)
		if cur != last {
			last, since = cur, time.Now()
		} else if len(sig) > 0 && time.Since(since) >= quiet {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// notLocal drops the instances of remote that are sidecars of local (the
// same app, namespace and internal port, on an address of this machine).
func notLocal(remote, local []sidecarStatus) []sidecarStatus {
	var out []sidecarStatus
	for _, r := range remote {
		if !slices.ContainsFunc(local, func(l sidecarStatus) bool { return sameInstance(r, l) }) {
			out = append(out, r)
		}
	}
	return out
}

func sameInstance(r, l sidecarStatus) bool {
	if r.AppID != l.AppID || r.Namespace != l.Namespace {
		return false
	}
	rh, rp, err := net.SplitHostPort(r.Internal)
	if err != nil {
		return false
	}
	_, lp, err := net.SplitHostPort(l.Internal)
	if err != nil || rp != lp {
		return false
	}
	return isThisHost(rh)
}

// isThisHost reports whether host is an address of this machine.
func isThisHost(host string) bool {
	ip := net.ParseIP(host)
	if ip == nil {
		return host == "localhost"
	}
	if ip.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}
