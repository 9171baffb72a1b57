package apphealth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/meshd/meshd/proxy/appchannel"
)

// Defaults (daprd's).
const (
	DefaultPath      = "/healthz"
	DefaultInterval  = 5 * time.Second
	DefaultTimeout   = 500 * time.Millisecond
	DefaultThreshold = 3
)

// Config configures a Checker.
type Config struct {
	Channel   *appchannel.Channel // required
	Path      string              // HTTP probe path, default /healthz
	Interval  time.Duration
	Timeout   time.Duration
	Threshold int
	Logger    *slog.Logger
}

// Checker probes the app. Healthy is lock-free.
type Checker struct {
	cfg      Config
	healthy  atomic.Bool
	failures int // consecutive, owned by Run

	mu       sync.Mutex
	onChange []func(healthy bool)

	grpcConn *grpc.ClientConn
	health   healthpb.HealthClient
}

// New validates cfg and builds a Checker (unhealthy until the first
// successful probe).
func New(cfg Config) (*Checker, error) {
	if cfg.Channel == nil {
		return nil, errors.New("apphealth: an app channel is required (no --app-port?)")
	}
	if cfg.Path == "" {
		cfg.Path = DefaultPath
	}
	if cfg.Path[0] != '/' {
		return nil, fmt.Errorf("apphealth: health check path %q must start with /", cfg.Path)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Threshold <= 0 {
		cfg.Threshold = DefaultThreshold
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Checker{cfg: cfg}
	if cfg.Channel.Protocol().IsGRPC() {
		creds := insecure.NewCredentials()
		if cfg.Channel.Protocol().IsTLS() {
			creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // see appchannel
		}
		cc, err := grpc.NewClient(cfg.Channel.Addr(), grpc.WithTransportCredentials(creds))
		if err != nil {
			return nil, fmt.Errorf("apphealth: gRPC client: %w", err)
		}
		c.grpcConn, c.health = cc, healthpb.NewHealthClient(cc)
	}
	return c, nil
}

// Healthy reports the app's current health.
func (c *Checker) Healthy() bool { return c.healthy.Load() }

// OnChange registers fn, called (from the probing goroutine) with the new
// state on every transition.
func (c *Checker) OnChange(fn func(healthy bool)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onChange = append(c.onChange, fn)
}

// StartupInterval is the probe interval while the app has never been
// healthy (capped by Config.Interval): an app that starts a moment after its
// sidecar is served within ~StartupInterval, not a full Interval later.
const StartupInterval = 150 * time.Millisecond

// Run probes until ctx is done. The first probe runs at once; until the
// first successful probe, probes repeat every StartupInterval (or Interval
// if shorter), then every Interval.
func (c *Checker) Run(ctx context.Context) {
	defer func() {
		if c.grpcConn != nil {
			_ = c.grpcConn.Close()
		}
	}()
	everHealthy := false
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		c.ProbeOnce(ctx)
		everHealthy = everHealthy || c.Healthy()
		next := c.cfg.Interval
		if !everHealthy {
			next = min(StartupInterval, next)
		}
		// Probes start every `next`, as a ticker would, but never overlap.
		t.Reset(max(0, next-time.Since(start)))
	}
}

// ProbeOnce runs one probe and updates the state. Run calls it; it is
// exported for tests and for callers that drive probing themselves. It must
// not be called concurrently with itself.
func (c *Checker) ProbeOnce(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	err := c.probe(pctx)
	cancel()
	if ctx.Err() != nil {
		return
	}
	if err == nil {
		c.failures = 0
		c.set(true, nil)
		return
	}
	c.failures++
	if c.failures >= c.cfg.Threshold {
		c.set(false, err)
	}
}

func (c *Checker) set(healthy bool, cause error) {
	if c.healthy.Swap(healthy) == healthy {
		return
	}
	if healthy {
		c.cfg.Logger.Info("apphealth: app is healthy", "app", c.cfg.Channel.Addr())
	} else {
		c.cfg.Logger.Warn("apphealth: app is unhealthy", "app", c.cfg.Channel.Addr(), "failures", c.failures, "err", cause)
	}
	c.mu.Lock()
	fns := append([]func(bool){}, c.onChange...)
	c.mu.Unlock()
	for _, fn := range fns {
		fn(healthy)
	}
}

func (c *Checker) probe(ctx context.Context) error {
	if c.health != nil {
		resp, err := c.health.Check(ctx, &healthpb.HealthCheckRequest{})
		if status.Code(err) == codes.Unimplemented {
			var d net.Dialer
			conn, derr := d.DialContext(ctx, "tcp", c.cfg.Channel.Addr())
			if derr != nil {
				return fmt.Errorf("apphealth: connect: %w", derr)
			}
			return conn.Close()
		}
		if err != nil {
			return fmt.Errorf("apphealth: grpc health check: %w", err)
		}
		if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("apphealth: grpc health status %s", s)
		}
		return nil
	}
	req := (&http.Request{Method: http.MethodGet, URL: c.cfg.Channel.URL(c.cfg.Path, ""), Header: http.Header{}, Host: c.cfg.Channel.Addr()}).WithContext(ctx)
	resp, err := c.cfg.Channel.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("apphealth: GET %s: %w", c.cfg.Path, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("apphealth: GET %s: status %d", c.cfg.Path, resp.StatusCode)
	}
	return nil
}
