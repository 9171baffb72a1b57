package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// sidecarStatus is one row of `meshctl list`: what the run record says,
// what the sidecar's health endpoints answer and what its metrics show.
type sidecarStatus struct {
	AppID       string    `json:"appId" yaml:"appId"`
	Namespace   string    `json:"namespace" yaml:"namespace"`
	Ready       bool      `json:"ready" yaml:"ready"`
	NotReady    string    `json:"notReadyReason,omitempty" yaml:"notReadyReason,omitempty"`
	AppHealthy  bool      `json:"appHealthy" yaml:"appHealthy"`
	HTTPAddr    string    `json:"httpAddress" yaml:"httpAddress"`
	GRPCAddr    string    `json:"grpcAddress" yaml:"grpcAddress"`
	Internal    string    `json:"internalAddress" yaml:"internalAddress"`
	MetricsAddr string    `json:"metricsAddress" yaml:"metricsAddress"`
	AppPort     int       `json:"appPort,omitempty" yaml:"appPort,omitempty"`
	CertExpiry  time.Time `json:"certExpiry,omitzero" yaml:"certExpiry,omitempty"`
	CallsOut    float64   `json:"callsOut" yaml:"callsOut"`                   // requests sent, total
	CallsIn     float64   `json:"callsIn" yaml:"callsIn"`                     // requests received, total
	RateOut     float64   `json:"callsOutPerSecond" yaml:"callsOutPerSecond"` // over --window
	RateIn      float64   `json:"callsInPerSecond" yaml:"callsInPerSecond"`
	ErrorsOut   float64   `json:"errorsOut" yaml:"errorsOut"` // answers not 1xx-3xx (HTTP) or not OK (gRPC), total
	ErrorsIn    float64   `json:"errorsIn" yaml:"errorsIn"`
	Denied      float64   `json:"policyDenied" yaml:"policyDenied"` // policy decisions: deny, total
	MeshctlPID  int       `json:"meshctlPid" yaml:"meshctlPid"`
	MeshdPID    int       `json:"meshdPid" yaml:"meshdPid"`
	AppPID      int       `json:"appPid,omitempty" yaml:"appPid,omitempty"`
	Command     []string  `json:"command,omitempty" yaml:"command,omitempty"`
	Started     time.Time `json:"started" yaml:"started"`
	Error       string    `json:"error,omitempty" yaml:"error,omitempty"` // the sidecar could not be asked
}

// sentryStatus is the local sentry of `meshctl status`.
type sentryStatus struct {
	Running bool         `json:"running" yaml:"running"`
	PID     int          `json:"pid,omitempty" yaml:"pid,omitempty"`
	Address string       `json:"address,omitempty" yaml:"address,omitempty"`
	Home    string       `json:"home" yaml:"home"`
	Roots   []rootStatus `json:"trustRoots,omitempty" yaml:"trustRoots,omitempty"`
}

type rootStatus struct {
	Subject  string    `json:"subject" yaml:"subject"`
	NotAfter time.Time `json:"notAfter" yaml:"notAfter"`
}

type statusDoc struct {
	Sentry   sentryStatus    `json:"sentry" yaml:"sentry"`
	Sidecars []sidecarStatus `json:"sidecars" yaml:"sidecars"`
}

func newListCommand() *cobra.Command {
	var output string
	var window time.Duration
	c := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "list the sidecars `meshctl run` runs on this machine: health, addresses, certificate expiry, calls/s, errors",
		Long: "list shows every sidecar of `meshctl run` on this machine (the records in $" + envHome + "/run),\n" +
			"asking each through its own loopback endpoints, read-only: /v1.0/healthz and /v1.0/healthz/app on\n" +
			"its HTTP port, and /metrics on its metrics port (certificate expiry, calls, errors, policy\n" +
			"denials). Rates are measured over --window (two scrapes). Records of runs whose meshctl has\n" +
			"gone are skipped.",
		Example: "  meshctl list\n  meshctl list --output json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			h, err := home()
			if err != nil {
				return err
			}
			sc, err := sidecars(cmd.Context(), h, window)
			if err != nil {
				return err
			}
			switch output {
			case "json", "yaml":
				return encode(cmd.OutOrStdout(), output, sc)
			}
			return sidecarTable(cmd.OutOrStdout(), sc, time.Now())
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "table", "table, json or yaml")
	c.Flags().DurationVar(&window, "window", time.Second, "how long to measure calls/s over (0: no rates)")
	return c
}

func newStatusCommand() *cobra.Command {
	var output string
	var window time.Duration
	c := &cobra.Command{
		Use:     "status",
		Short:   "the local mesh: sentry (running, address, trust roots and their expiry) and its sidecars (as list)",
		Example: "  meshctl status\n  meshctl status -o yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			h, err := home()
			if err != nil {
				return err
			}
			doc := statusDoc{Sentry: sentryStatus{Home: h}}
			l, err := readLocal(h)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			if l.running(h) {
				doc.Sentry.Running, doc.Sentry.PID, doc.Sentry.Address = true, l.PID, l.SentryAddress
			}
			doc.Sentry.Roots = roots(filepath.Join(h, "sentry", "bundle.pem"))
			if doc.Sidecars, err = sidecars(cmd.Context(), h, window); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch output {
			case "json", "yaml":
				return encode(out, output, doc)
			}
			if !doc.Sentry.Running {
				fmt.Fprintf(out, "sentry: not running (start it with `meshctl init`); home %s\n", h)
			} else {
				fmt.Fprintf(out, "sentry: running, pid %d, gRPC %s; home %s\n", doc.Sentry.PID, doc.Sentry.Address, h)
			}
			for _, r := range doc.Sentry.Roots {
				fmt.Fprintf(out, "trust root: %s, expires %s (in %s)\n", r.Subject, r.NotAfter.Format(time.RFC3339), until(r.NotAfter, time.Now()))
			}
			fmt.Fprintln(out)
			return sidecarTable(out, doc.Sidecars, time.Now())
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "table", "table, json or yaml")
	c.Flags().DurationVar(&window, "window", time.Second, "how long to measure calls/s over (0: no rates)")
	return c
}

func checkOutput(o string) error {
	switch o {
	case "table", "json", "yaml":
		return nil
	}
	return fmt.Errorf("--output %q: want table, json or yaml", o)
}

func encode(w io.Writer, format string, v any) error {
	if format == "yaml" {
		e := yaml.NewEncoder(w)
		e.SetIndent(2)
		if err := e.Encode(v); err != nil {
			return err
		}
		return e.Close()
	}
	e := json.NewEncoder(w)
	e.SetEscapeHTML(false)
	e.SetIndent("", "  ")
	return e.Encode(v)
}

func roots(bundle string) []rootStatus {
	b, err := os.ReadFile(bundle)
	if err != nil {
		return nil
	}
	var rs []rootStatus
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return rs
		}
		if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
			rs = append(rs, rootStatus{Subject: c.Subject.String(), NotAfter: c.NotAfter.UTC()})
		}
	}
}

// sidecars reads the run records of h and asks each live sidecar.
func sidecars(ctx context.Context, h string, window time.Duration) ([]sidecarStatus, error) {
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
		out = append(out, sidecarStatus{AppID: r.AppID, Namespace: r.Namespace,
			HTTPAddr: "127.0.0.1:" + strconv.Itoa(r.HTTPPort), GRPCAddr: "127.0.0.1:" + strconv.Itoa(r.GRPCPort),
			Internal: "127.0.0.1:" + strconv.Itoa(r.InternalPort), MetricsAddr: "127.0.0.1:" + strconv.Itoa(r.MetricsPort),
			AppPort: r.AppPort, MeshctlPID: r.PID, MeshdPID: r.MeshdPID, AppPID: r.AppPID, Command: r.Command, Started: r.Started})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].AppID != out[j].AppID {
			return out[i].AppID < out[j].AppID
		}
		return out[i].MeshdPID < out[j].MeshdPID
	})
	first := make([]counts, len(out))
	t0 := time.Now()
	for i := range out {
		s := &out[i]
		s.Ready, s.NotReady = probe(ctx, "http://"+s.HTTPAddr+"/v1.0/healthz")
		s.AppHealthy, _ = probe(ctx, "http://"+s.HTTPAddr+"/v1.0/healthz/app")
		c, err := scrape(ctx, "http://"+s.MetricsAddr+"/metrics")
		if err != nil {
			s.Error = err.Error()
			continue
		}
		first[i] = c
		s.CertExpiry, s.CallsOut, s.CallsIn, s.ErrorsOut, s.ErrorsIn, s.Denied = c.certExpiry, c.out, c.in, c.errOut, c.errIn, c.denied
	}
	if window <= 0 || len(out) == 0 {
		return out, nil
	}
	select {
	case <-ctx.Done():
		return out, ctx.Err()
	case <-time.After(window):
	}
	secs := time.Since(t0).Seconds()
	for i := range out {
		s := &out[i]
		if s.Error != "" {
			continue
		}
		c, err := scrape(ctx, "http://"+s.MetricsAddr+"/metrics")
		if err != nil {
			continue
		}
		s.RateOut, s.RateIn = (c.out-first[i].out)/secs, (c.in-first[i].in)/secs
	}
	return out, nil
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

// counts are the figures of one scrape.
type counts struct {
	certExpiry                     time.Time
	out, in, errOut, errIn, denied float64
}

func scrape(ctx context.Context, url string) (counts, error) {
	var c counts
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return c, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c, fmt.Errorf("metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return c, fmt.Errorf("metrics: %w", err)
	}
	if f := fams["meshd_cert_expiry_timestamp_seconds"]; f != nil && len(f.Metric) > 0 && f.Metric[0].Gauge.GetValue() > 0 {
		c.certExpiry = time.Unix(int64(f.Metric[0].Gauge.GetValue()), 0).UTC()
	}
	c.out, c.errOut = requests(fams["meshd_requests_sent_total"])
	c.in, c.errIn = requests(fams["meshd_requests_received_total"])
	if f := fams["meshd_policy_decisions_total"]; f != nil {
		for _, m := range f.Metric {
			if label(m, "decision") == "deny" {
				c.denied += m.GetCounter().GetValue()
			}
		}
	}
	return c, nil
}

// requests sums a meshd_requests_*_total family, and its errors: an HTTP
// status of 400 and above, a gRPC code other than 0 (OK), or unknown.
func requests(f *dto.MetricFamily) (total, errs float64) {
	if f == nil {
		return 0, 0
	}
	for _, m := range f.Metric {
		v := m.GetCounter().GetValue()
		total += v
		st := label(m, "status")
		n, err := strconv.Atoi(st)
		bad := err != nil
		if err == nil {
			if label(m, "protocol") == "grpc" {
				bad = n != 0
			} else {
				bad = n >= 400
			}
		}
		if bad {
			errs += v
		}
	}
	return total, errs
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func sidecarTable(w io.Writer, sc []sidecarStatus, now time.Time) error {
	if len(sc) == 0 {
		_, err := fmt.Fprintln(w, "no sidecars of `meshctl run` on this machine")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tNAMESPACE\tREADY\tAPP HEALTH\tHTTP\tGRPC\tINTERNAL\tCERT EXPIRES\tOUT/S\tIN/S\tERRORS\tDENIED\tAGE")
	for _, s := range sc {
		ready, app, cert := "yes", "healthy", "-"
		if !s.Ready {
			ready = "no"
		}
		if !s.AppHealthy {
			app = "unhealthy"
		}
		if !s.CertExpiry.IsZero() {
			cert = "in " + until(s.CertExpiry, now)
		}
		errs := "-"
		if s.CallsOut+s.CallsIn > 0 {
			errs = fmt.Sprintf("%.0f/%.0f (%.1f%%)", s.ErrorsOut+s.ErrorsIn, s.CallsOut+s.CallsIn, 100*(s.ErrorsOut+s.ErrorsIn)/(s.CallsOut+s.CallsIn))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%.1f\t%s\t%.0f\t%s\n", s.AppID, s.Namespace, ready, app,
			s.HTTPAddr, s.GRPCAddr, s.Internal, cert, s.RateOut, s.RateIn, errs, s.Denied, until(now, s.Started))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range sc {
		if s.NotReady != "" {
			fmt.Fprintf(w, "%s (meshd pid %d): %s\n", s.AppID, s.MeshdPID, s.NotReady)
		}
		if s.Error != "" {
			fmt.Fprintf(w, "%s (meshd pid %d): %s\n", s.AppID, s.MeshdPID, s.Error)
		}
	}
	return nil
}

// until is the time from a to b, rounded for people.
func until(b, a time.Time) string {
	d := b.Sub(a)
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return d.Round(time.Minute).String()
	}
	return strconv.Itoa(int(d.Hours()/24)) + "d"
}
