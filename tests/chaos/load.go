package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
)

// Call is one call the load made and what its caller saw.
type Call struct {
	ID       string
	Method   string // GET or POST
	Start    time.Time
	Dur      time.Duration
	Status   int    // 0: the HTTP exchange with the caller sidecar failed
	ErrCode  string // the sidecar's errorCode of a failed call
	Instance string // the echo instance that answered a 200
	Err      string // a transport error of the exchange with the sidecar
	TimedOut bool   // no answer within Load.Timeout: never reported
}

// OK reports whether the call succeeded.
func (c Call) OK() bool { return c.Status == http.StatusOK }

// Reported reports whether a failed call was reported to the caller: an
// error status with meshd's JSON error, or a transport error to the local
// sidecar (which is itself an answer: the caller knows).
func (c Call) Reported() bool { return !c.TimedOut }

// Load sends calls at a fixed rate (open loop: a slow answer does not slow
// the rate) to App through the caller sidecar at BaseURL, alternating GET
// and POST, until its context ends.
type Load struct {
	BaseURL string // the caller sidecar's HTTP API, http://host:port
	App     string // target app ID
	Rate    int    // calls per second (default 500)
	Prefix  string // of the Chaos-Ids
	// Dial, if set, makes the connections to the sidecar (e.g. inside the
	// load generator's network namespace).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// H2C sends every other call over HTTP/2 (prior knowledge), the rest
	// over HTTP/1.1, so both peer transports of the sidecar are exercised.
	H2C bool
	// Timeout bounds one call (default 30s): a call the mesh never answers
	// is counted as failed, unreported.
	Timeout time.Duration

	mu    sync.Mutex
	calls []Call
	seq   atomic.Int64
}

func (l *Load) clients() []*http.Client {
	to := l.Timeout
	if to <= 0 {
		to = 30 * time.Second
	}
	mk := func(h2c bool) *http.Client {
		tr := &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true, Protocols: new(http.Protocols)}
		if l.Dial != nil {
			tr.DialContext = l.Dial
		}
		if h2c {
			tr.Protocols.SetUnencryptedHTTP2(true)
		} else {
			tr.Protocols.SetHTTP1(true)
		}
		return &http.Client{Transport: tr, Timeout: to}
	}
	cs := []*http.Client{mk(false)}
	if l.H2C {
		cs = append(cs, mk(true))
	}
	return cs
}

// Run sends calls until ctx ends, waits for those in flight, and returns
// them all.
func (l *Load) Run(ctx context.Context) []Call {
	rate := l.Rate
	if rate <= 0 {
		rate = 500
	}
	cs := l.clients()
	defer func() {
		for _, c := range cs {
			c.CloseIdleConnections()
		}
	}()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	var wg sync.WaitGroup
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			wg.Wait()
			l.mu.Lock()
			defer l.mu.Unlock()
			return slices.Clone(l.calls)
		case <-tick.C:
		}
		method := http.MethodGet
		if i%2 == 1 {
			method = http.MethodPost
		}
		c := cs[(i/2)%len(cs)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			call := l.one(c, method)
			l.mu.Lock()
			l.calls = append(l.calls, call)
			l.mu.Unlock()
		}()
	}
}

// Count returns how many calls finished so far.
func (l *Load) Count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.calls)
}

// Calls returns the calls finished so far.
func (l *Load) Calls() []Call {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

func (l *Load) one(c *http.Client, method string) Call {
	id := fmt.Sprintf("%s%d", l.Prefix, l.seq.Add(1))
	call := Call{ID: id, Method: method, Start: time.Now()}
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(`{"order":"` + id + `"}`)
	}
	req, err := http.NewRequest(method, l.BaseURL+"/v1.0/invoke/"+l.App+"/method/chaos/"+id, body)
	if err != nil {
		call.Err = err.Error()
		return call
	}
	req.Header.Set("Chaos-Id", id)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		call.Dur = time.Since(call.Start)
		call.Err = err.Error()
		var ne net.Error
		call.TimedOut = errors.As(err, &ne) && ne.Timeout()
		return call
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	call.Dur = time.Since(call.Start)
	call.Status = resp.StatusCode
	var v struct {
		Name      string `json:"name"`
		ErrorCode string `json:"errorCode"`
	}
	_ = json.Unmarshal(b, &v)
	call.Instance, call.ErrCode = v.Name, v.ErrorCode
	if !call.OK() && call.ErrCode == "" {
		call.ErrCode = "status " + fmt.Sprint(resp.StatusCode) + ": " + string(bytes.TrimSpace(b[:min(len(b), 200)]))
	}
	return call
}

// Record is what the apps recorded: Chaos-Id → how many times, and where.
type Record map[string][]string // id → "METHOD instance" per delivery

// ReadRecord reads the --record files of the echo apps.
func ReadRecord(paths ...string) (Record, error) {
	r := Record{}
	for _, p := range paths {
		f, err := os.Open(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("chaos: %w", err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			id, rest, ok := strings.Cut(sc.Text(), " ")
			if !ok {
				f.Close()
				return nil, fmt.Errorf("chaos: %s: bad line %q", p, sc.Text())
			}
			r[id] = append(r[id], rest)
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("chaos: %s: %w", p, err)
		}
	}
	return r, nil
}

// Result sums up a fault: the figures of docs/reliability.md.
type Result struct {
	Fault string `json:"fault"`
	// HoldMs is how long the fault was held; Rate the calls per second.
	HoldMs float64 `json:"holdMs"`
	Rate   int     `json:"rate"`
	Calls  int     `json:"calls"`
	GETs   int     `json:"gets"`
	// GETFailed counts idempotent calls that failed at all;
	// GETFailedAfterDetect those that started after the fault was
	// detected (goal 0).
	GETFailed            int `json:"getFailed"`
	GETFailedAfterDetect int `json:"getFailedAfterDetect"`
	POSTs                int `json:"posts"`
	POSTFailed           int `json:"postFailed"`
	// POSTFailedDelivered counts failed POSTs the app recorded anyway (the
	// caller was told it failed; the outcome was in doubt).
	POSTFailedDelivered int `json:"postFailedDelivered"`
	// GETRedelivered counts GETs the apps saw more than once (a retry of
	// an idempotent call whose first attempt was delivered late): allowed.
	GETRedelivered int `json:"getRedelivered"`
	// Unreported counts failures the caller was not told of (no answer in
	// the client's timeout); Lost counts 200s the app never recorded;
	// Duplicated counts POSTs the apps recorded more than once. Goal 0
	// each.
	Unreported int `json:"unreported"`
	Lost       int `json:"lost"`
	Duplicated int `json:"duplicated"`
	// DetectMs: from the fault to its detection (the caller ejected the
	// endpoint, or the first call failed over), -1 if never.
	DetectMs float64 `json:"detectMs"`
	// RecoverMs: from the fault's end to the affected instance's first
	// successful call, -1 if never or not applicable.
	// EjectedWhy is the caller's reason for its first ejection of the
	// instance (its log's why= onwards).
	EjectedWhy  string         `json:"ejectedWhy,omitempty"`
	RecoverMs   float64        `json:"recoverMs"`
	P99DuringMs float64        `json:"p99DuringMs"`
	P99AfterMs  float64        `json:"p99AfterMs"`
	MaxDuringMs float64        `json:"maxDuringMs"`
	Errors      map[string]int `json:"errors,omitempty"`
	// Slowest are the three slowest calls, for the why of a latency.
	Slowest []string `json:"slowest,omitempty"`
	// Examples are a few of the calls behind a bad figure (lost,
	// duplicated, unreported), with what the apps recorded.
	Examples []string `json:"examples,omitempty"`
	Note     string   `json:"note,omitempty"`
}

// Window is a fault's timing: it began at Start, ended at End (the
// process resumed, the link came back), and was detected at Detect (zero:
// not seen).
type Window struct {
	Start, End, Detect time.Time
	Instance           string // the affected echo instance ("" if none)
}

// Check compares calls with what the apps recorded.
func Check(fault string, calls []Call, rec Record, w Window) Result {
	r := Result{Fault: fault, Calls: len(calls), DetectMs: -1, RecoverMs: -1, Errors: map[string]int{}}
	var during, after []time.Duration
	var recovered time.Time
	for _, c := range calls {
		delivered := len(rec[c.ID])
		switch {
		case delivered > 1 && c.Method == http.MethodPost:
			r.Duplicated++
			r.example(c, rec)
		case delivered > 1:
			r.GETRedelivered++ // a retried idempotent call: allowed
		}
		if c.OK() && delivered == 0 {
			r.Lost++
			r.example(c, rec)
		}
		if !c.OK() {
			key := c.ErrCode
			if key == "" {
				key = c.Err
			}
			if i := strings.IndexAny(key, ":"); i > 0 && len(key) > 60 {
				key = key[:i]
			}
			r.Errors[c.Method+" "+key]++
			if !c.Reported() {
				r.Unreported++
				r.example(c, rec)
			}
		}
		switch c.Method {
		case http.MethodGet:
			r.GETs++
			if !c.OK() {
				r.GETFailed++
				if !w.Detect.IsZero() && c.Start.After(w.Detect) {
					r.GETFailedAfterDetect++
				}
			}
		default:
			r.POSTs++
			if !c.OK() {
				r.POSTFailed++
				if delivered > 0 {
					r.POSTFailedDelivered++
				}
			}
		}
		switch {
		case !w.Start.IsZero() && c.Start.Before(w.Start):
		case w.End.IsZero() || c.Start.Before(w.End):
			during = append(during, c.Dur)
		default:
			after = append(after, c.Dur)
			if c.OK() && w.Instance != "" && c.Instance == w.Instance {
				if end := c.Start.Add(c.Dur); recovered.IsZero() || end.Before(recovered) {
					recovered = end
				}
			}
		}
	}
	if !w.Detect.IsZero() {
		r.DetectMs = ms(w.Detect.Sub(w.Start))
	}
	if !recovered.IsZero() {
		r.RecoverMs = ms(recovered.Sub(w.End))
	}
	r.P99DuringMs, r.MaxDuringMs = p99(during)
	slow := slices.Clone(calls)
	slices.SortFunc(slow, func(a, b Call) int { return int(b.Dur - a.Dur) })
	for _, c := range slow[:min(3, len(slow))] {
		r.Slowest = append(r.Slowest, fmt.Sprintf("%s %s %.0fms status=%d code=%q err=%q instance=%q start=+%.0fms",
			c.ID, c.Method, ms(c.Dur), c.Status, c.ErrCode, c.Err, c.Instance, ms(c.Start.Sub(w.Start))))
	}
	r.P99AfterMs, _ = p99(after)
	if len(r.Errors) == 0 {
		r.Errors = nil
	}
	return r
}

func (r *Result) example(c Call, rec Record) {
	if len(r.Examples) < 10 {
		r.Examples = append(r.Examples, fmt.Sprintf("%s %s start=%s dur=%s status=%d err=%q code=%q instance=%q recorded=%v",
			c.ID, c.Method, c.Start.Format("15:04:05.000"), c.Dur, c.Status, c.Err, c.ErrCode, c.Instance, rec[c.ID]))
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func p99(ds []time.Duration) (p, maxD float64) {
	if len(ds) == 0 {
		return 0, 0
	}
	slices.Sort(ds)
	return ms(ds[(len(ds)*99)/100]), ms(ds[len(ds)-1])
}

// String is the one-line summary of r.
func (r Result) String() string {
	return fmt.Sprintf("%s: %d calls; GET %d failed %d (after detection %d); POST %d failed %d (delivered anyway %d); unreported %d lost %d duplicated %d; detect %.0fms recover %.0fms; p99 during %.1fms (max %.0fms) after %.1fms; errors %v",
		r.Fault, r.Calls, r.GETs, r.GETFailed, r.GETFailedAfterDetect, r.POSTs, r.POSTFailed, r.POSTFailedDelivered,
		r.Unreported, r.Lost, r.Duplicated, r.DetectMs, r.RecoverMs, r.P99DuringMs, r.MaxDuringMs, r.P99AfterMs, r.Errors)
}

// Table renders results as the Markdown table of docs/reliability.md.
func Table(rs []Result) string {
	var b strings.Builder
	b.WriteString("| fault | held | calls | GET failed (after detection) | POST failed (delivered anyway) | unreported / lost / POST twice | detect | recover | p99 during (max) | p99 after | notes |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	f := func(v float64) string {
		if v < 0 {
			return "–"
		}
		if v >= 1000 {
			return fmt.Sprintf("%.2f s", v/1000)
		}
		return fmt.Sprintf("%.0f ms", v)
	}
	for _, r := range rs {
		if r.Calls == 0 {
			fmt.Fprintf(&b, "| %s | | | | | | | | | | %s |\n", r.Fault, r.Note)
			continue
		}
		note := r.Note
		if r.EjectedWhy != "" {
			note = strings.TrimSpace("ejected: " + strings.Fields(r.EjectedWhy)[0] + " " + note)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d of %d (%d) | %d of %d (%d) | %d / %d / %d | %s | %s | %s (%s) | %s | %s |\n",
			r.Fault, f(r.HoldMs), r.Calls, r.GETFailed, r.GETs, r.GETFailedAfterDetect, r.POSTFailed, r.POSTs, r.POSTFailedDelivered,
			r.Unreported, r.Lost, r.Duplicated, f(r.DetectMs), f(r.RecoverMs), f(r.P99DuringMs), f(r.MaxDuringMs), f(r.P99AfterMs), note)
	}
	return b.String()
}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// Binaries builds meshd, sentry and echo once per process into a directory
// of its own, removed by RemoveBinaries (harness.Build's shared
// /tmp/meshd-e2e-bin-* directories have been seen removed under a running
// suite by another checkout's harness).
func Binaries(t testing.TB) harness.Binaries {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "meshd-chaos-bin-")
		if binErr != nil {
			return
		}
		out, _ := exec.Command("git", "-C", harness.RepoRoot(), "rev-parse", "--short", "HEAD").Output()
		BuiltCommit = strings.TrimSpace(string(out))
		args := []string{"build", "-o", binDir + "/"}
		if os.Getenv("MESHD_E2E_RACE") != "" {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/meshd", "./cmd/sentry", "./examples/apps/echo")...)
		cmd.Dir = harness.RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return harness.Binaries{Meshd: filepath.Join(binDir, "meshd"), Sentry: filepath.Join(binDir, "sentry"), Echo: filepath.Join(binDir, "echo")}
}

// BuiltCommit is the commit (HEAD) Binaries built from, for the figures:
// HEAD may move while a long suite runs.
var BuiltCommit string

// RemoveBinaries removes what Binaries built (from TestMain or a Cleanup).
func RemoveBinaries() {
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
}
