package main

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// sidecarStatus is one row of `meshctl list`: what the run record (or the
// resolver) says, and what the sidecar's admin endpoint answers.
type sidecarStatus struct {
	AppID     string `json:"appId" yaml:"appId"`
	Namespace string `json:"namespace" yaml:"namespace"`
	// Where: "local", a sidecar of `meshctl run` on this machine, read
	// through its admin endpoint; "resolver", an instance the resolver lists
	// whose admin endpoint (loopback of its own host) meshctl cannot reach:
	// the fields in Unknown are not known for it.
	Where       string    `json:"where" yaml:"where"`
	Unknown     []string  `json:"unknown,omitempty" yaml:"unknown,omitempty"`
	Ready       bool      `json:"ready" yaml:"ready"`
	NotReady    string    `json:"notReadyReason,omitempty" yaml:"notReadyReason,omitempty"`
	AppHealth   string    `json:"appHealth,omitempty" yaml:"appHealth,omitempty"` // healthy, unhealthy, unchecked (no health check), no app
	SPIFFEID    string    `json:"spiffeId,omitempty" yaml:"spiffeId,omitempty"`
	HTTPAddr    string    `json:"httpAddress,omitempty" yaml:"httpAddress,omitempty"`
	GRPCAddr    string    `json:"grpcAddress,omitempty" yaml:"grpcAddress,omitempty"`
	Internal    string    `json:"internalAddress" yaml:"internalAddress"`
	MetricsAddr string    `json:"metricsAddress,omitempty" yaml:"metricsAddress,omitempty"`
	AdminAddr   string    `json:"adminAddress,omitempty" yaml:"adminAddress,omitempty"`
	AppPort     int       `json:"appPort,omitempty" yaml:"appPort,omitempty"`
	CertExpiry  time.Time `json:"certExpiry,omitzero" yaml:"certExpiry,omitempty"`
	// PolicyMode is enforce, audit, mixed or off; PolicyDefault the
	// decision for namespaces without policy.
	PolicyMode    string    `json:"policyMode,omitempty" yaml:"policyMode,omitempty"`
	PolicyDefault string    `json:"policyDefault,omitempty" yaml:"policyDefault,omitempty"`
	CallsOut      float64   `json:"callsOut" yaml:"callsOut"`                   // requests sent, total
	CallsIn       float64   `json:"callsIn" yaml:"callsIn"`                     // requests received, total
	RateOut       float64   `json:"callsOutPerSecond" yaml:"callsOutPerSecond"` // over --window
	RateIn        float64   `json:"callsInPerSecond" yaml:"callsInPerSecond"`
	ErrorsOut     float64   `json:"errorsOut" yaml:"errorsOut"` // answers not 1xx-3xx (HTTP) or not OK (gRPC), total
	ErrorsIn      float64   `json:"errorsIn" yaml:"errorsIn"`
	Denied        float64   `json:"policyDenied" yaml:"policyDenied"` // policy decisions: deny, total
	MeshctlPID    int       `json:"meshctlPid,omitempty" yaml:"meshctlPid,omitempty"`
	MeshdPID      int       `json:"meshdPid,omitempty" yaml:"meshdPid,omitempty"`
	AppPID        int       `json:"appPid,omitempty" yaml:"appPid,omitempty"`
	Command       []string  `json:"command,omitempty" yaml:"command,omitempty"`
	Started       time.Time `json:"started,omitzero" yaml:"started,omitempty"`
	Error         string    `json:"error,omitempty" yaml:"error,omitempty"` // the sidecar could not be asked
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

// meshFlags adds the flags list, status and the dashboard share: where
// to look besides this machine's runs.
func meshFlags(c *cobra.Command, q *meshQuery) {
	c.Flags().StringVar(&q.resolver, "resolver", "", "also list every instance of every app this resolver knows, as meshd takes it: static, consul, kubernetes or mdns")
	c.Flags().StringVar(&q.resolverConfig, "resolver-config", "", "configuration file of --resolver (as meshd's)")
	c.Flags().DurationVar(&q.settle, "resolver-wait", 5*time.Second, "longest wait for a resolver that finds apps in the background (consul) to list them all")
}

const meshLong = "Each sidecar of `meshctl run` on this machine (the records in $" + envHome + "/run; records of runs\n" +
	"whose meshctl has gone are skipped) is read through its own loopback endpoints, read-only: its\n" +
	"/v1.0/healthz, and its admin endpoint (/admin/v1/status, on the metrics port): app health, SPIFFE\n" +
	"ID, certificate expiry, policy mode and default, calls, errors and policy denials. Rates are\n" +
	"measured over --window (two readings).\n\n" +
	"With --resolver (and --resolver-config, as meshd takes them) every instance of every app the\n" +
	"resolver lists is shown too. An instance that is not a `meshctl run` of this machine is marked\n" +
	"\"resolver\": its admin endpoint listens on loopback of its own host, so only its app, namespace\n" +
	"and internal address are known, and the output names the fields that are not (unknown)."

func newListCommand() *cobra.Command {
	var output string
	q := meshQuery{}
	c := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "list the sidecars of the mesh: health, addresses, certificate expiry, policy mode, calls/s, errors",
		Long:    "list shows every sidecar of `meshctl run` on this machine, and with --resolver every instance\nthe resolver knows.\n\n" + meshLong,
		Example: "  meshctl list\n  meshctl list --output json\n  meshctl list --resolver static --resolver-config apps.yaml\n" +
			"  meshctl list --resolver consul --resolver-config consul.yaml -o yaml",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			h, err := home()
			if err != nil {
				return err
			}
			q.home = h
			sc, err := readMesh(cmd.Context(), q)
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
	c.Flags().DurationVar(&q.window, "window", time.Second, "how long to measure calls/s over (0: no rates)")
	meshFlags(c, &q)
	return c
}

func newStatusCommand() *cobra.Command {
	var output string
	q := meshQuery{}
	c := &cobra.Command{
		Use:     "status",
		Short:   "the mesh: the local sentry (running, address, trust roots and their expiry) and the sidecars (as list)",
		Long:    "status shows the local sentry of `meshctl init` and the sidecars, as list does.\n\n" + meshLong,
		Example: "  meshctl status\n  meshctl status -o yaml\n  meshctl status --resolver consul --resolver-config consul.yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			h, err := home()
			if err != nil {
				return err
			}
			q.home = h
			doc := statusDoc{Sentry: sentryStatus{Home: h}}
			l, err := readLocal(h)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			if l.running(h) {
				doc.Sentry.Running, doc.Sentry.PID, doc.Sentry.Address = true, l.PID, l.SentryAddress
			}
			doc.Sentry.Roots = roots(filepath.Join(h, "sentry", "bundle.pem"))
			if doc.Sidecars, err = readMesh(cmd.Context(), q); err != nil {
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
	c.Flags().DurationVar(&q.window, "window", time.Second, "how long to measure calls/s over (0: no rates)")
	meshFlags(c, &q)
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
	fmt.Fprintln(tw, "APP\tNAMESPACE\tWHERE\tREADY\tAPP HEALTH\tINTERNAL\tHTTP\tCERT EXPIRES\tPOLICY\tOUT/S\tIN/S\tERRORS\tDENIED\tAGE")
	remote := 0
	for _, s := range sc {
		if s.Where == whereResolver {
			remote++
			fmt.Fprintf(tw, "%s\t%s\t%s\t?\t?\t%s\t?\t?\t?\t?\t?\t?\t?\t?\n", s.AppID, s.Namespace, s.Where, s.Internal)
			continue
		}
		ready, cert, pol, errs := "yes", "-", "-", "-"
		if !s.Ready {
			ready = "no"
		}
		app := s.AppHealth
		if app == "" {
			app = "-"
		}
		if !s.CertExpiry.IsZero() {
			cert = "in " + until(s.CertExpiry, now)
		}
		if s.PolicyMode != "" {
			pol = s.PolicyMode + ", default " + s.PolicyDefault
		}
		if s.CallsOut+s.CallsIn > 0 {
			errs = fmt.Sprintf("%.0f/%.0f (%.1f%%)", s.ErrorsOut+s.ErrorsIn, s.CallsOut+s.CallsIn, 100*(s.ErrorsOut+s.ErrorsIn)/(s.CallsOut+s.CallsIn))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%.1f\t%s\t%.0f\t%s\n", s.AppID, s.Namespace, s.Where, ready, app,
			s.Internal, s.HTTPAddr, cert, pol, s.RateOut, s.RateIn, errs, s.Denied, until(now, s.Started))
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
	if remote > 0 {
		fmt.Fprintf(w, "?: not known for the %d instance(s) found through the resolver only: a sidecar's admin endpoint listens on loopback of its own host\n", remote)
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
