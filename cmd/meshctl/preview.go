package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/policy"
	"github.com/meshd/meshd/policy/authz"
	"github.com/meshd/meshd/policy/decisionlog"
	"github.com/meshd/meshd/proxy/route"
	"github.com/meshd/meshd/sidecar/admin"
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
	// From says where the decisions came from: "logs" (--log) or
	// "sidecars" (the recent decisions the running sidecars keep).
	From string `json:"from" yaml:"from"`
	// Sources are the log files, or the sidecars ("APP (meshd pid N)").
	Sources   []string `json:"sources" yaml:"sources"`
	Decisions int      `json:"decisions" yaml:"decisions"`
	Unread    int      `json:"unreadLines,omitempty" yaml:"unreadLines,omitempty"`
	// Missed counts decisions the sidecars made but no longer keep.
	Missed int `json:"missed,omitempty" yaml:"missed,omitempty"`
	// Skipped are the sidecars that could not be read, and why.
	Skipped []string `json:"skipped,omitempty" yaml:"skipped,omitempty"`
	Flips   []flip   `json:"flips" yaml:"flips"`
}

// replaySet is the decisions to replay, and where they came from.
type replaySet struct {
	from    string
	sources []string
	entries []decisionlog.Entry
	unread  int
	missed  int
	skipped []string
}

func newPolicyPreviewCommand() *cobra.Command {
	var (
		dir, config, def, output string
		logs                     []string
	)
	c := &cobra.Command{
		Use:   "preview --policy-dir NEW [--log FILE]...",
		Short: "replay recent policy decisions against a proposed policy set and list every call that would flip",
		Long: "preview decides recent calls again under the proposed policy (--policy-dir, --config,\n" +
			"--policy-default, as meshd takes them), before anything is applied, and lists each kind of call\n" +
			"whose decision would change, ALLOW → DENY or DENY → ALLOW, with how often it was made, the new\n" +
			"reason and rule. A proposed set that does not compile is an error with file:line, and no answer.\n\n" +
			"Without --log it replays the recent decisions of the sidecars `meshctl run` runs now, every one,\n" +
			"allows included, read from each sidecar's admin endpoint (the last --policy-recent-decisions,\n" +
			"1024, per sidecar), with their query strings. With --log it reads meshd logs instead (the\n" +
			"`policy: allow|deny|audit` lines, text or JSON): every denial, but one allow in\n" +
			"--policy-allow-log-every (100), and no query strings. Headers are never kept, so a proposed\n" +
			"policy that reads them sees none.",
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
			e, err := policy.New(cmd.Context(), policy.Options{Source: policy.Source{Dir: dir, ConfigFile: config},
				Default: d, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				return fmt.Errorf("proposed policy: %w", err)
			}
			var set replaySet
			if len(logs) > 0 {
				set, err = readLogs(logs)
			} else {
				set, err = recentDecisions(cmd.Context())
			}
			if err != nil {
				return err
			}
			res := replay(context.WithoutCancel(cmd.Context()), e, set)
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
	f.StringArrayVar(&logs, "log", nil, "a meshd log file to read decisions from (repeatable; default: the recent decisions of the sidecars of meshctl run)")
	f.StringVarP(&output, "output", "o", "table", "table, json or yaml")
	return c
}

// recentDecisions are the recent decisions of the sidecars of `meshctl
// run` on this machine, read from their admin endpoints.
func recentDecisions(ctx context.Context) (replaySet, error) {
	set := replaySet{from: "sidecars"}
	h, err := home()
	if err != nil {
		return set, err
	}
	sc, err := localSidecars(h)
	if err != nil {
		return set, err
	}
	if len(sc) == 0 {
		return set, fmt.Errorf("no decisions to replay: no sidecar of `meshctl run` runs on this machine; give meshd logs with --log FILE")
	}
	sort.Slice(sc, func(i, j int) bool {
		return sc[i].AppID < sc[j].AppID || sc[i].AppID == sc[j].AppID && sc[i].MeshdPID < sc[j].MeshdPID
	})
	for _, s := range sc {
		d, err := admin.GetDecisions(ctx, s.AdminAddr, 0)
		if err != nil { // not ready yet (no decision made), or its admin endpoint is off
			set.skipped = append(set.skipped, fmt.Sprintf("%s (meshd pid %d): %v", s.AppID, s.MeshdPID, err))
			continue
		}
		set.sources = append(set.sources, fmt.Sprintf("%s (meshd pid %d)", s.AppID, s.MeshdPID))
		set.missed += int(d.Missed)
		for _, x := range d.Decisions {
			set.entries = append(set.entries, decisionlog.Entry{Source: x.Source, Destination: x.Destination, Protocol: x.Protocol,
				Method: x.Method, Path: x.Path, Query: x.Query, Allow: x.Allow, Audit: x.Audit, Reason: x.Reason, Rule: x.Rule})
		}
	}
	if len(set.sources) == 0 {
		return set, fmt.Errorf("no decisions to replay: no sidecar could be read: %s", strings.Join(set.skipped, "; "))
	}
	return set, nil
}

// readLogs reads the decisions in meshd logs.
func readLogs(logs []string) (replaySet, error) {
	set := replaySet{from: "logs", sources: logs}
	for _, path := range logs {
		f, err := os.Open(path)
		if err != nil {
			return set, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			ent, ok, err := decisionlog.ParseLine(sc.Text())
			if err != nil {
				set.unread++
				continue
			}
			if ok {
				set.entries = append(set.entries, ent)
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return set, fmt.Errorf("%s: %w", path, err)
		}
	}
	return set, nil
}

// previewDir previews the policy directory dir against the recent
// decisions of the running sidecars (the dashboard's form).
func previewDir(ctx context.Context, dir, def string) (previewResult, error) {
	d, err := policy.ParseDefault(def)
	if err != nil {
		return previewResult{}, err
	}
	e, err := policy.New(ctx, policy.Options{Source: policy.Source{Dir: dir}, Default: d, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return previewResult{}, fmt.Errorf("proposed policy: %w", err)
	}
	set, err := recentDecisions(ctx)
	if err != nil {
		return previewResult{}, err
	}
	return replay(context.WithoutCancel(ctx), e, set), nil
}

// replay decides every decision of set again with e and lists the flips.
func replay(ctx context.Context, e *policy.Engine, set replaySet) previewResult {
	res := previewResult{From: set.from, Sources: set.sources, Unread: set.unread, Missed: set.missed, Skipped: set.skipped, Flips: []flip{}}
	if res.Sources == nil {
		res.Sources = []string{}
	}
	byKey := map[flip]*flip{}
	for _, ent := range set.entries {
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
	return res
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
	return authz.Request{Caller: caller, Destination: dest, Protocol: proto, Method: e.Method, Path: e.Path, Query: e.Query}, nil
}

func previewTable(w io.Writer, r previewResult) error {
	n := 0
	for _, f := range r.Flips {
		n += f.Count
	}
	if r.From == "logs" {
		fmt.Fprintf(w, "replayed %d logged decisions from %d log(s) against the proposed policy: %d would flip", r.Decisions, len(r.Sources), n)
	} else {
		fmt.Fprintf(w, "replayed %d recent decisions of %d sidecar(s) (%s) against the proposed policy: %d would flip",
			r.Decisions, len(r.Sources), strings.Join(r.Sources, ", "), n)
	}
	if r.Unread > 0 {
		fmt.Fprintf(w, " (%d decision lines could not be read)", r.Unread)
	}
	if r.Missed > 0 {
		fmt.Fprintf(w, " (%d older decisions no longer kept)", r.Missed)
	}
	for _, s := range r.Skipped {
		fmt.Fprintf(w, "\nnot read: %s", s)
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
