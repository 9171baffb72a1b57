package policy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/policy/accesscontrol"
	"github.com/meshd/meshd/policy/authz"
	"github.com/meshd/meshd/policy/decisionlog"
)

// Default is the decision for a namespace that has no policy. The zero
// value is DefaultAllow, like the --policy-default flag (a fresh install);
// DefaultDeny is the documented secure choice.
type Default uint8

// Defaults.
const (
	DefaultAllow Default = iota
	DefaultDeny
)

// ParseDefault parses "allow" or "deny".
func ParseDefault(s string) (Default, error) {
	switch strings.ToLower(s) {
	case "allow":
		return DefaultAllow, nil
	case "deny":
		return DefaultDeny, nil
	}
	return DefaultDeny, fmt.Errorf("policy: default %q: want allow or deny", s)
}

func (d Default) String() string {
	if d == DefaultAllow {
		return "allow"
	}
	return "deny"
}

// Options configure an Engine.
type Options struct {
	Source
	// Default decides namespaces without any policy (and calls when there
	// is neither a policy directory nor a config). Fresh installs use
	// DefaultAllow; DefaultDeny is the secure choice.
	Default Default
	// Logger receives reload messages (slog.Default() if nil).
	Logger *slog.Logger
	// DecisionLog records decisions (a Logger on Logger sampling one allow
	// in 100 if nil).
	DecisionLog *decisionlog.Logger
	// NoDecisionCache turns the per-snapshot Rego decision cache off
	// (every call is evaluated).
	NoDecisionCache bool
	// NoRegoCompile sends every Rego decision to OPA, also for the
	// namespaces whose Rego compiles to Go (compile.go).
	NoRegoCompile bool
	// Debounce is how long Watch waits for file events to settle
	// (default 100ms).
	Debounce time.Duration
}

// Engine decides calls against the current Snapshot. It is safe for
// concurrent use; Authorize takes no lock.
type Engine struct {
	opts     Options
	log      *slog.Logger
	dlog     *decisionlog.Logger
	cur      atomic.Pointer[Snapshot]
	reloads  atomic.Uint64
	failures atomic.Uint64
	lastErr  atomic.Pointer[errBox]
	reloadMu sync.Mutex

	// sources caches input.source per caller identity (bounded).
	sources   sync.Map // certs.Identity -> *ast.Term
	nsources  atomic.Int64
	anonymous *ast.Term
}

type errBox struct{ err error }

const maxCachedSources = 4096

// New loads the initial policy set; an error in it is fatal (fail closed:
// the sidecar does not start with a policy it cannot read).
func New(ctx context.Context, opts Options) (*Engine, error) {
	e := &Engine{opts: opts, log: opts.Logger, dlog: opts.DecisionLog}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.dlog == nil {
		e.dlog = decisionlog.New(e.log, 100)
	}
	if e.opts.Debounce <= 0 {
		e.opts.Debounce = 100 * time.Millisecond
	}
	e.anonymous = sourceTerm(&authz.Request{})
	s, err := Load(ctx, opts.Source)
	if err != nil {
		return nil, err
	}
	e.cur.Store(s)
	e.logEngines(s)
	e.log.Info("policy: loaded", "dir", opts.Dir, "config", opts.ConfigFile, "files", len(s.Files),
		"namespaces", s.Namespaces(), "default", opts.Default.String())
	return e, nil
}

// Snapshot returns the policy set in force.
func (e *Engine) Snapshot() *Snapshot { return e.cur.Load() }

// Reload loads the sources again; on success the new set replaces the old
// one atomically, on failure the old one stays, the failure is counted and
// logged with file:line:reason, and the error is returned.
func (e *Engine) Reload(ctx context.Context) error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	s, err := Load(ctx, e.opts.Source)
	if err != nil {
		e.failures.Add(1)
		e.lastErr.Store(&errBox{err})
		e.log.Error("policy: reload rejected; the last good policy set stays in force", "err", err)
		return err
	}
	e.cur.Store(s)
	e.logEngines(s)
	e.reloads.Add(1)
	e.lastErr.Store(nil)
	e.log.Info("policy: reloaded", "files", len(s.Files), "namespaces", s.Namespaces())
	return nil
}

// ReloadFS loads the policy tree from fsys in the place of the current
// one (Source.FS): the path of policies that do not come from files, such
// as the ones the xds resolver receives. It is Reload with a new tree: on
// success the new set replaces the old one atomically and fsys becomes the
// source; on failure the old set and source stay, the failure is counted
// and logged, and the error (a *LoadError with file:line:reason) is
// returned.
func (e *Engine) ReloadFS(ctx context.Context, fsys fs.FS) error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	src := e.opts.Source
	src.FS = fsys
	s, err := Load(ctx, src)
	if err != nil {
		e.failures.Add(1)
		e.lastErr.Store(&errBox{err})
		e.log.Error("policy: update rejected; the last good policy set stays in force", "err", err)
		return err
	}
	e.opts.Source = src
	e.cur.Store(s)
	e.logEngines(s)
	e.reloads.Add(1)
	e.lastErr.Store(nil)
	e.log.Info("policy: updated", "files", len(s.Files), "namespaces", s.Namespaces())
	return nil
}

// Reloads is the number of successful reloads (the initial load excluded).
func (e *Engine) Reloads() uint64 { return e.reloads.Load() }

// ReloadFailures is the number of rejected reloads (for metrics).
func (e *Engine) ReloadFailures() uint64 { return e.failures.Load() }

// LastReloadError is the error of the last reload, nil if it succeeded.
func (e *Engine) LastReloadError() error {
	if b := e.lastErr.Load(); b != nil {
		return b.err
	}
	return nil
}

// DecisionLog returns the decision logger (for its counters).
func (e *Engine) DecisionLog() *decisionlog.Logger { return e.dlog }

func (e *Engine) source(req *authz.Request) *ast.Term {
	if req.Caller.TrustDomain.IsZero() {
		return e.anonymous
	}
	if t, ok := e.sources.Load(req.Caller); ok {
		return t.(*ast.Term)
	}
	t := sourceTerm(req)
	if e.nsources.Load() < maxCachedSources {
		if _, loaded := e.sources.LoadOrStore(req.Caller, t); !loaded {
			e.nsources.Add(1)
		}
	}
	return t
}

// outcome is a decision with the facts behind it.
type outcome struct {
	allow bool
	// audit: allowed, but an accessControl in audit mode would deny.
	audit       bool
	reason      string
	rule        string
	auditReason string
}

// Authorize implements authz.Authorizer.
func (e *Engine) Authorize(ctx context.Context, req authz.Request) authz.Decision {
	o := e.decide(ctx, e.cur.Load(), &req, nil)
	rec := decisionlog.Record{Caller: req.Caller, Destination: req.Destination, Protocol: req.Protocol,
		Method: req.Method, Path: req.Path, Query: req.Query, Allow: o.allow, Audit: o.audit, Reason: o.reason, Rule: o.rule}
	if o.audit {
		rec.Reason = o.auditReason
	}
	e.dlog.Keep(&rec)
	if !o.allow {
		e.dlog.Deny(ctx, entry(&req, o.allow, o.reason, o.rule))
		return authz.Decision{Reason: o.reason}
	}
	if o.audit {
		e.dlog.Audit(ctx, entry(&req, true, o.auditReason, o.rule))
	} else {
		e.dlog.Allow(ctx, func() decisionlog.Entry { return entry(&req, true, "", o.rule) })
	}
	return authz.Decision{Allow: true}
}

func entry(req *authz.Request, allow bool, reason, rule string) decisionlog.Entry {
	src := ""
	if !req.Caller.TrustDomain.IsZero() {
		src = req.Caller.String()
	}
	return decisionlog.Entry{Source: src, Destination: req.Destination.String(), Protocol: req.Protocol,
		Method: req.Method, Path: req.Path, Allow: allow, Reason: reason, Rule: rule}
}

// trace, when not nil, collects explanation lines.
type trace struct {
	lines []string
	rego  *regoTrace
}

func (t *trace) add(format string, args ...any) {
	if t != nil {
		t.lines = append(t.lines, fmt.Sprintf(format, args...))
	}
}

func (e *Engine) decide(ctx context.Context, s *Snapshot, req *authz.Request, tr *trace) outcome {
	var o outcome
	allowedBy := ""
	ns := s.ns[req.Destination.Namespace]

	// 1. Mesh-wide accessControl.
	for _, a := range s.meshACLs {
		if d, done := e.acl(a, req, &o, &allowedBy, tr); done {
			return d
		}
	}
	// 2. Rego: mesh-wide and namespace rules, one evaluation.
	rs := s.meshRego
	if ns != nil && ns.rego != nil {
		rs = ns.rego
	}
	if rs != nil {
		var (
			verdict string
			reasons []string
			err     error
			decided bool
		)
		if rs.prog != nil && tr == nil && !e.opts.NoRegoCompile {
			verdict, reasons, decided = rs.prog.decide(req)
		}
		if !decided {
			if tr != nil {
				tr.add("rego: %s", rs.engineNote())
			}
			verdict, err = e.evalVerdict(ctx, rs, req, tr)
		}
		switch {
		case err != nil:
			tr.add("rego: evaluation error: %v", err)
			e.log.Error("policy: rego evaluation failed; denying", "err", err)
			return outcome{reason: "policy evaluation error", rule: "rego"}
		case verdict == "deny":
			if !decided {
				reasons = e.evalReasons(ctx, rs, req)
			}
			tr.add("rego: deny: %s", strings.Join(reasons, "; "))
			return outcome{reason: strings.Join(reasons, "; "), rule: rs.denyRule}
		case verdict == "allow":
			tr.add("rego: allow")
			if allowedBy == "" {
				allowedBy = "rego allow"
			}
		default:
			tr.add("rego: no allow rule matched, no deny rule matched")
		}
	}
	// 3. Namespace accessControl, then --config.
	if ns != nil {
		for _, a := range ns.acls {
			if d, done := e.acl(a, req, &o, &allowedBy, tr); done {
				return d
			}
		}
	}
	for _, a := range s.configACLs {
		if d, done := e.acl(a, req, &o, &allowedBy, tr); done {
			return d
		}
	}
	if allowedBy != "" {
		o.allow, o.rule = true, allowedBy
		return o
	}
	if ns == nil && len(s.configACLs) == 0 {
		if e.opts.Default == DefaultAllow {
			tr.add("namespace %q has no policy: default allow", req.Destination.Namespace)
			o.allow, o.rule = true, "default allow (no policy for namespace)"
			return o
		}
		tr.add("namespace %q has no policy: default deny", req.Destination.Namespace)
		return outcome{reason: "namespace " + req.Destination.Namespace + " has no policy and the default is deny", rule: "default deny"}
	}
	tr.add("no rule allowed the call")
	return outcome{reason: "no policy rule allows " + req.Method + " " + req.Path + " to " + req.Destination.String(), rule: "no allow"}
}

// acl applies one accessControl: a deny ends the decision (done), an
// audit-mode deny is noted, an allow is remembered.
func (e *Engine) acl(a *accesscontrol.ACL, req *authz.Request, o *outcome, allowedBy *string, tr *trace) (outcome, bool) {
	r := a.Decide(req.Caller, req.Protocol, req.Method, req.Path)
	rule := r.Rule(a)
	if tr != nil {
		verdict := "allow"
		if r.WouldDeny {
			verdict = "deny (audit mode: allowed)"
		} else if !r.Allow {
			verdict = "deny"
		}
		detail := ""
		if r.Policy != nil {
			detail = fmt.Sprintf(" policy appId=%s namespace=%s trustDomain=%s", r.Policy.AppID, r.Policy.Namespace, r.Policy.TrustDomain)
		}
		if r.Operation != nil {
			detail += fmt.Sprintf(" operation %s", r.Operation.Name)
		}
		tr.add("accessControl %s: %s by %s at %s%s", a.Source, verdict, r.Level, rule, detail)
	}
	if !r.Allow {
		return outcome{reason: r.Reason(a, req.Caller, req.Method, req.Path), rule: rule}, true
	}
	if r.WouldDeny {
		o.audit = true
		if o.auditReason == "" {
			o.auditReason = r.Reason(a, req.Caller, req.Method, req.Path)
		}
		return outcome{}, false
	}
	if *allowedBy == "" {
		*allowedBy = rule
	}
	return outcome{}, false
}

var errNoResult = errors.New("policy: rego verdict is undefined")

func (e *Engine) evalVerdict(ctx context.Context, rs *regoSet, req *authz.Request, tr *trace) (string, error) {
	var key cacheKey
	if rs.cacheable && tr == nil && !e.opts.NoDecisionCache {
		key = cacheKey{req.Caller, req.Destination, req.Protocol, req.Method, req.Path}
		if v, ok := rs.cache.get(&key); ok {
			return v, nil
		}
	}
	in := buildInput(req, e.source(req), rs.needHeaders, rs.needQuery)
	var optsBuf [3]rego.EvalOption
	opts := append(append(optsBuf[:0], rs.baseOpts...), rego.EvalParsedInput(in))
	q := rs.verdict
	if tr != nil {
		tr.rego = newRegoTrace()
		opts = append(opts, rego.EvalQueryTracer(tr.rego.buf))
		q = rs.explain
	}
	res, err := q.Eval(ctx, opts...)
	if err != nil {
		return "", err
	}
	if len(res) != 1 || len(res[0].Expressions) != 1 {
		return "", errNoResult
	}
	v, _ := res[0].Expressions[0].Value.(string)
	switch v { // interned, so the cache holds no per-call strings
	case "allow":
		v = "allow"
	case "deny":
		v = "deny"
	default:
		v = "none"
	}
	if rs.cacheable && tr == nil && !e.opts.NoDecisionCache {
		rs.cache.put(&key, v)
	}
	return v, nil
}

func (e *Engine) evalReasons(ctx context.Context, rs *regoSet, req *authz.Request) []string {
	in := buildInput(req, e.source(req), rs.needHeaders, rs.needQuery)
	res, err := rs.reasons.Eval(ctx, rego.EvalExternalCancel(rs.cancel), rego.EvalParsedInput(in))
	if err != nil || len(res) != 1 || len(res[0].Expressions) != 1 {
		return []string{"denied by policy"}
	}
	arr, _ := res[0].Expressions[0].Value.([]any)
	out := make([]string, 0, len(arr))
	for _, v := range arr {
		out = append(out, fmt.Sprint(v))
	}
	return out
}

// identityString is the caller's SPIFFE ID or "<none>".
func identityString(c certs.Identity) string {
	if c.TrustDomain.IsZero() {
		return "<none>"
	}
	return c.String()
}
