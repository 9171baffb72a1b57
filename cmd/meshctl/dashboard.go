package main

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"net/http"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spf13/cobra"

	"github.com/meshd/meshd/sidecar/admin"
)

//go:embed dashboard
var dashboardFS embed.FS

func newDashboardCommand() *cobra.Command {
	var (
		addr     string
		interval time.Duration
		q        meshQuery
	)
	c := &cobra.Command{
		Use:   "dashboard",
		Short: "a live web page of the local mesh: topology, instances, denials, certificates, history",
		Long: "dashboard serves a page on 127.0.0.1 (assets embedded, nothing from the network) that shows the\n" +
			"sidecars of `meshctl run` live: apps as nodes and calls as edges with calls/s, p99 and errors,\n" +
			"each app's instances with health, policy mode and certificate expiry, recent policy denials with\n" +
			"their reasons, the trust bundle's roots, and calls/s of the last minutes. It reads the sidecars'\n" +
			"metrics and admin endpoints (status, recent decisions) every --interval; the page updates itself\n" +
			"without a reload. With --resolver the instances the resolver lists elsewhere are shown too, with\n" +
			"what is not known of them.",
		Example: "  meshctl dashboard\n  meshctl dashboard --address 127.0.0.1:7070",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return fmt.Errorf("--address %q: %w", addr, err)
			}
			if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
				return fmt.Errorf("--address %q: the dashboard serves on loopback only (127.0.0.1, ::1)", addr)
			}
			h, err := home()
			if err != nil {
				return err
			}
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("--address: %w", err)
			}
			d := newDashboard(h)
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if q.resolver != "" {
				if d.res, err = openResolver(ctx, q); err != nil {
					_ = l.Close()
					return err
				}
				defer d.res.Close()
			}
			go d.sample(ctx, interval)
			srv := &http.Server{Handler: d.handler(), ReadHeaderTimeout: 5 * time.Second}
			go func() { <-ctx.Done(); _ = srv.Close() }()
			fmt.Fprintf(cmd.OutOrStdout(), "dashboard: http://%s/ (Ctrl-C stops it)\n", l.Addr())
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	c.Flags().StringVar(&addr, "address", "127.0.0.1:7070", "address to serve on (loopback only; port 0: a free one)")
	c.Flags().DurationVar(&interval, "interval", time.Second, "how often the sidecars are read")
	meshFlags(c, &q)
	return c
}

// edge is calls from one app to another as the caller's sidecar counts
// them, over the last interval.
type edge struct {
	From   string  `json:"from"`
	To     string  `json:"to"`
	Rate   float64 `json:"rate"`   // calls/s
	Errors float64 `json:"errors"` // share of answers that were errors, 0..1
	P99ms  float64 `json:"p99ms"`  // -1: no calls in the interval
	Total  float64 `json:"total"`
}

type denial struct {
	App         string `json:"app"` // whose sidecar decided
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Method      string `json:"method"`
	Path        string `json:"path"`
	Reason      string `json:"reason"`
	Rule        string `json:"rule"`
}

type point struct {
	T    int64   `json:"t"` // unix ms
	Rate float64 `json:"rate"`
	Err  float64 `json:"errRate"`
}

type dashState struct {
	Updated  time.Time       `json:"updated"`
	Sentry   sentryStatus    `json:"sentry"`
	Sidecars []sidecarStatus `json:"sidecars"`
	Edges    []edge          `json:"edges"`
	Denials  []denial        `json:"denials"`
	History  []point         `json:"history"`
}

// edgeSample is the cumulative figures of one edge at one scrape.
type edgeSample struct {
	total, errs float64
	buckets     []bucket
}

type bucket struct{ le, count float64 }

type dashboard struct {
	home  string
	res   *meshResolver // --resolver; nil: none
	mu    sync.Mutex
	state dashState
	prev  map[string]edgeSample // key from→to
	prevT time.Time
	// after is the last decision read from each sidecar (key: admin
	// address and meshd PID); denials the last maxDenials, newest first.
	after   map[string]uint64 // the sampling goroutine's
	denials []denial          // the sampling goroutine's
}

// maxDenials is how many recent denials the page lists.
const maxDenials = 50

func newDashboard(h string) *dashboard {
	return &dashboard{home: h, after: map[string]uint64{},
		state: dashState{Sidecars: []sidecarStatus{}, Edges: []edge{}, Denials: []denial{}, History: []point{}}}
}

func (d *dashboard) handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(dashboardFS, "dashboard")
	mux.Handle("GET /", http.FileServerFS(static))
	mux.HandleFunc("GET /api/state", func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		b, err := json.Marshal(d.state)
		d.mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(b)
	})
	// Preview of a proposed policy set against the recent decisions of the
	// running sidecars. POST with a JSON body (a cross-site page cannot send
	// one without a CORS preflight, which is never answered) to a loopback
	// Host (no DNS rebinding); it only reads.
	mux.HandleFunc("POST /api/preview", func(w http.ResponseWriter, r *http.Request) {
		if !loopbackHost(r.Host) || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		var req struct {
			PolicyDir     string `json:"policyDir"`
			PolicyDefault string `json:"policyDefault"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil || req.PolicyDir == "" {
			writeJSONError(w, "give policyDir: the proposed policy directory")
			return
		}
		if req.PolicyDefault == "" {
			req.PolicyDefault = "allow"
		}
		res, err := previewDir(r.Context(), req.PolicyDir, req.PolicyDefault)
		if err != nil {
			writeJSONError(w, err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(res)
	})
	return mux
}

func writeJSONError(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnprocessableEntity)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func loopbackHost(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// sample reads the mesh every interval until ctx ends.
func (d *dashboard) sample(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		d.once(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

const historyLen = 300 // points: 5 minutes at 1s

func (d *dashboard) once(ctx context.Context) {
	now := time.Now()
	sc, _ := readMeshWith(ctx, meshQuery{home: d.home}, d.res)
	sc = nonNil(sc)
	st := sentryStatus{Home: d.home}
	if l, err := readLocal(d.home); err == nil && l.running(d.home) {
		st.Running, st.PID, st.Address = true, l.PID, l.SentryAddress
	}
	st.Roots = roots(filepath.Join(d.home, "sentry", "bundle.pem"))

	cur := map[string]edgeSample{}
	for _, s := range sc {
		if s.Error != "" || s.Where != whereLocal {
			continue
		}
		fams, err := scrapeFamilies(ctx, "http://"+s.MetricsAddr+"/metrics")
		if err != nil {
			continue
		}
		addEdges(cur, fams)
	}
	d.readDenials(ctx, sc) // before the lock: it asks the sidecars
	d.mu.Lock()
	defer d.mu.Unlock()
	dt := now.Sub(d.prevT).Seconds()
	var edges []edge
	var rate, errRate float64
	for k, c := range cur {
		from, to, _ := strings.Cut(k, "→")
		e := edge{From: from, To: to, Total: c.total, P99ms: -1}
		if p, ok := d.prev[k]; ok && dt > 0 {
			n := c.total - p.total
			if n > 0 {
				e.Rate = n / dt
				e.Errors = (c.errs - p.errs) / n
				e.P99ms = quantile(c.buckets, p.buckets, 0.99) * 1000
			}
		}
		rate += e.Rate
		errRate += e.Rate * e.Errors
		edges = append(edges, e)
	}
	sort.Slice(edges, func(i, j int) bool { return edges[i].From+edges[i].To < edges[j].From+edges[j].To })
	d.prev, d.prevT = cur, now
	hist := append(d.state.History, point{T: now.UnixMilli(), Rate: rate, Err: errRate})
	if len(hist) > historyLen {
		hist = hist[len(hist)-historyLen:]
	}
	d.state = dashState{Updated: now.UTC(), Sentry: st, Sidecars: sc, Edges: nonNil(edges), Denials: slices.Clone(d.denials), History: hist}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// readDenials reads the decisions each local sidecar made since the last
// reading (its admin endpoint's ring) and keeps the denials. Only the
// sampling goroutine calls it (after and denials are its own); the state
// served gets a copy.
func (d *dashboard) readDenials(ctx context.Context, sc []sidecarStatus) {
	seen := map[string]bool{}
	for _, s := range sc {
		if s.Where != whereLocal || s.AdminAddr == "" || s.Error != "" {
			continue
		}
		key := s.AdminAddr + "/" + strconv.Itoa(s.MeshdPID)
		seen[key] = true
		res, err := admin.GetDecisions(ctx, s.AdminAddr, d.after[key])
		if err != nil {
			continue
		}
		d.after[key] = res.Last
		for _, x := range res.Decisions { // oldest first
			if x.Allow {
				continue
			}
			d.denials = append([]denial{{App: s.AppID, Source: x.Source, Destination: x.Destination, Method: x.Method,
				Path: x.Path, Reason: x.Reason, Rule: x.Rule}}, d.denials...)
		}
		if len(d.denials) > maxDenials {
			d.denials = d.denials[:maxDenials]
		}
	}
	for k := range d.after {
		if !seen[k] {
			delete(d.after, k) // a sidecar that has gone
		}
	}
}

func scrapeFamilies(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(resp.Body)
}

// addEdges adds one sidecar's outbound calls to cur, by caller → callee.
func addEdges(cur map[string]edgeSample, fams map[string]*dto.MetricFamily) {
	if f := fams["meshd_requests_sent_total"]; f != nil {
		for _, m := range f.Metric {
			k := label(m, "src_app_id") + "→" + label(m, "dst_app_id")
			s := cur[k]
			t, e := requests(&dto.MetricFamily{Metric: []*dto.Metric{m}})
			s.total += t
			s.errs += e
			cur[k] = s
		}
	}
	if f := fams["meshd_request_sent_duration_seconds"]; f != nil {
		for _, m := range f.Metric {
			k := label(m, "src_app_id") + "→" + label(m, "dst_app_id")
			s := cur[k]
			for i, b := range m.GetHistogram().GetBucket() {
				if i < len(s.buckets) {
					s.buckets[i].count += float64(b.GetCumulativeCount())
				} else {
					s.buckets = append(s.buckets, bucket{le: b.GetUpperBound(), count: float64(b.GetCumulativeCount())})
				}
			}
			cur[k] = s
		}
	}
}

// quantile estimates the q-quantile (seconds) of the observations between
// two cumulative histograms, interpolating within the bucket as Prometheus'
// histogram_quantile does.
func quantile(cur, prev []bucket, q float64) float64 {
	if len(cur) == 0 {
		return -1
	}
	delta := make([]float64, len(cur))
	for i := range cur {
		delta[i] = cur[i].count
		if i < len(prev) {
			delta[i] -= prev[i].count
		}
	}
	total := delta[len(delta)-1]
	if total <= 0 {
		return -1
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for i, c := range delta {
		if c >= rank {
			if math.IsInf(cur[i].le, 1) {
				return lower
			}
			if c == below {
				return cur[i].le
			}
			return lower + (cur[i].le-lower)*(rank-below)/(c-below)
		}
		lower, below = cur[i].le, c
	}
	return lower
}
