package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/policy"
	"github.com/meshd/meshd/policy/authz"
	"github.com/meshd/meshd/policy/decisionlog"
	"github.com/meshd/meshd/proxy/route"
)

// flip is one kind of call whose decision the proposed policy changes.
type flip struct {
	From        string `json:"from" yaml:"from"` // ALLOW or DENY, as logged
	To          string `json:"to" yaml:"to"`     // under the proposed policy
	Count       int    `json:"count" yaml:"count"`
	Source      string `json:"source" yaml:"source"`
	Destination string `json:"destination" yaml:"destination"`
	Protocol    string `json:"protocol" yaml:"protocol"`
	Method      string `json:"method" yaml:"method"`
	Path        string `json:"path" yaml:"path"`
	Reason      string `json:"reason,omitempty" yaml:"reason,omitempty"` // the new decision's reason (denials)
	Rule        string `json:"rule" yaml:"rule"`                         // the new deciding rule
	WasRule     string `json:"wasRule,omitempty" yaml:"wasRule,omitempty"`
}

type previewResult struct {
	Logs      []string `json:"logs" yaml:"logs"`
	Decisions int      `json:"decisions" yaml:"decisions"`
	Unread    int      `json:"unreadLines" yaml:"unreadLines"`
	Flips     []flip   `json:"flips" yaml:"flips"`
}

func newPolicyPreviewCommand() *cobra.Command {
	var (
		dir, config, def, output string
		logs                     []string
	)
	c := &cobra.Command{
		Use:   "preview --policy-dir NEW [--log FILE]...",
		Short: "replay recent policy decisions against a proposed policy set and list every call that would flip",
		Long: "preview reads the decision log of sidecars (the `policy: allow|deny|audit` lines of meshd's log,\n" +
			"text or JSON) and decides every logged call again under the proposed policy (--policy-dir,\n" +
			"--config, --policy-default, as meshd takes them), before anything is applied. It lists each kind\n" +
			"of call whose decision would change, ALLOW → DENY or DENY → ALLOW, with how often it was logged,\n" +
			"the new reason and rule. Without --log it reads the logs of the sidecars `meshctl run` runs now.\n" +
			"A proposed set that does not compile is an error with file:line, and no answer.\n\n" +
			"Only what the log holds is replayed: denials always, allows one in --policy-allow-log-every (100)\n" +
			"unless meshd runs with 1; headers and the query string are not logged, so a policy that reads\n" +
			"them sees none.",
		Example: "  meshctl policy preview --policy-dir ./policies-next\n" +
			"  meshctl policy preview --policy-dir ./policies-next --log orders.log --log web.log -o json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if dir == "" && config == "" {
				return fmt.Errorf("--policy-dir or --config is required")
			}
			d, err := policy.ParseDefault(def)
			if err != nil {
				return err
			}
			if len(logs) == 0 {
				if logs, err = runLogs(); err != nil {
					return err
				}
				if len(logs) == 0 {
					return fmt.Errorf("no decision logs: no sidecar of `meshctl run` runs on this machine; give meshd logs with --log FILE")
				}
			}
			e, err := policy.New(cmd.Context(), policy.Options{Source: policy.Source{Dir: dir, ConfigFile: config},
				Default: d, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				return fmt.Errorf("proposed policy: %w", err)
			}
			res, err := preview(context.WithoutCancel(cmd.Context()), e, logs)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch output {
			case "json", "yaml":
				return encode(out, output, res)
			}
			return previewTable(out, res)
		},
	}
	f := c.Flags()
	f.StringVar(&dir, "policy-dir", "", "the proposed policy directory")
	f.StringVar(&config, "config", "", "the proposed Dapr Configuration YAML (accessControl)")
	f.StringVar(&def, "policy-default", "allow", "decision for namespaces without policy: allow or deny")
	f.StringArrayVar(&logs, "log", nil, "a meshd log file to read decisions from (repeatable; default: the sidecars of meshctl run)")
	f.StringVarP(&output, "output", "o", "table", "table, json or yaml")
	return c
}

// runLogs are the meshd logs `meshctl run` keeps for its live sidecars.
func runLogs() ([]string, error) {
	h, err := home()
	if err != nil {
		return nil, err
	}
	files, err := filepath.Glob(filepath.Join(h, "run", "*.meshd.log"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	return files, nil
}

// previewDir previews the policy directory dir against the logs of the
// running sidecars (the dashboard's form).
func previewDir(ctx context.Context, dir, def string) (previewResult, error) {
	d, err := policy.ParseDefault(def)
	if err != nil {
		return previewResult{}, err
	}
	logs, err := runLogs()
	if err != nil {
		return previewResult{}, err
	}
	e, err := policy.New(ctx, policy.Options{Source: policy.Source{Dir: dir}, Default: d, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return previewResult{}, fmt.Errorf("proposed policy: %w", err)
	}
	return preview(context.WithoutCancel(ctx), e, logs)
}

func preview(ctx context.Context, e *policy.Engine, logs []string) (previewResult, error) {
	res := previewResult{Logs: logs, Flips: []flip{}}
	byKey := map[flip]*flip{}
	for _, path := range logs {
		f, err := os.Open(path)
		if err != nil {
			return res, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			ent, ok, err := decisionlog.ParseLine(sc.Text())
			if err != nil {
				res.Unread++
				continue
			}
			if !ok {
				continue
			}
			req, err := replayRequest(ent)
			if err != nil {
				res.Unread++
				continue
			}
			res.Decisions++
			x := e.Explain(ctx, req)
			if x.Allow == ent.Allow {
				continue
			}
			k := flip{From: verdict(ent.Allow), To: verdict(x.Allow), Source: ent.Source, Destination: ent.Destination,
				Protocol: ent.Protocol, Method: ent.Method, Path: ent.Path, Reason: x.Reason, Rule: x.Rule, WasRule: ent.Rule}
			if p := byKey[k]; p != nil {
				p.Count++
			} else {
				k2 := k
				k2.Count = 1
				byKey[k] = &k2
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return res, fmt.Errorf("%s: %w", path, err)
		}
	}
	for _, p := range byKey {
		res.Flips = append(res.Flips, *p)
	}
	sort.Slice(res.Flips, func(i, j int) bool {
		a, b := res.Flips[i], res.Flips[j]
		if a.From != b.From {
			return a.From < b.From // ALLOW → DENY first
		}
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		return fmt.Sprint(a) < fmt.Sprint(b)
	})
	return res, nil
}

func verdict(allow bool) string {
	if allow {
		return "ALLOW"
	}
	return "DENY"
}

// replayRequest rebuilds the request a decision was made on.
func replayRequest(e decisionlog.Entry) (authz.Request, error) {
	var caller certs.Identity
	if e.Source != "" {
		var err error
		if caller, err = certs.ParseIdentity(e.Source); err != nil {
			return authz.Request{}, err
		}
	}
	dest, err := route.ParseTarget(e.Destination, discovery.DefaultNamespace)
	if err != nil {
		return authz.Request{}, err
	}
	proto := e.Protocol
	if proto == "" {
		proto = authz.ProtocolHTTP
	}
	return authz.Request{Caller: caller, Destination: dest, Protocol: proto, Method: e.Method, Path: e.Path}, nil
}

func previewTable(w io.Writer, r previewResult) error {
	n := 0
	for _, f := range r.Flips {
		n += f.Count
	}
	fmt.Fprintf(w, "replayed %d logged decisions from %d log(s) against the proposed policy: %d would flip", r.Decisions, len(r.Logs), n)
	if r.Unread > 0 {
		fmt.Fprintf(w, " (%d decision lines could not be read)", r.Unread)
	}
	fmt.Fprintln(w)
	for _, f := range r.Flips {
		src := f.Source
		if src == "" {
			src = "(no identity)"
		}
		fmt.Fprintf(w, "%s → %s  %d×  %s → %s  %s %s %s\n", f.From, f.To, f.Count, src, f.Destination, strings.ToUpper(f.Protocol), f.Method, f.Path)
		if f.Reason != "" {
			fmt.Fprintf(w, "    reason: %s\n", f.Reason)
		}
		fmt.Fprintf(w, "    decided by: %s", f.Rule)
		if f.WasRule != "" {
			fmt.Fprintf(w, " (was: %s)", f.WasRule)
		}
		fmt.Fprintln(w)
	}
	return nil
}
