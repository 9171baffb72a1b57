package accesscontrol

import (
	"strings"

	"github.com/meshd/meshd/certs"
)

// DefaultTrustDomain is Dapr's trust domain when accessControl names none.
const DefaultTrustDomain = "public"

// Level says which precedence level gave a decision.
type Level uint8

// Levels, from weakest to strongest.
const (
	LevelGlobal    Level = iota + 1 // spec.accessControl.defaultAction
	LevelApp                        // policies[].defaultAction
	LevelOperation                  // policies[].operations[] action (per verb for HTTP)
)

// String names the level.
func (l Level) String() string {
	switch l {
	case LevelGlobal:
		return "global defaultAction"
	case LevelApp:
		return "app defaultAction"
	case LevelOperation:
		return "operation action"
	}
	return "none"
}

// Policy is one compiled entry of spec.accessControl.policies: the rules
// for one calling app.
type Policy struct {
	AppID, Namespace, TrustDomain string
	Default                       Action
	// Source is "file:line" of the entry.
	Source string

	glob       bool
	http, grpc *Matcher
}

// ACL is one compiled spec.accessControl.
type ACL struct {
	// Source is the file it came from.
	Source string
	// Default is the global defaultAction after Dapr's defaulting rules.
	Default Action
	// DefaultSource is "file:line" of the defaultAction (or of
	// accessControl when it was defaulted).
	DefaultSource string
	// TrustDomain is this app's trust domain (informational, as in Dapr).
	TrustDomain string
	// Audit: decide, but allow every call; Result.WouldDeny reports denials.
	Audit bool

	exact map[appKey]*Policy
	globs []*Policy
}

type appKey struct{ app, ns string }

// Result is a decision with the reasons for it.
type Result struct {
	// Allow is the decision (always true in audit mode).
	Allow bool
	// WouldDeny is set in audit mode when enforcing would have denied.
	WouldDeny bool
	// Level is the precedence level that decided.
	Level Level
	// Policy is the caller's policy entry (nil at LevelGlobal).
	Policy *Policy
	// Operation is the matched operation (nil unless one matched).
	Operation *Operation
}

// Rule returns "file:line" of the rule that decided.
func (r Result) Rule(a *ACL) string {
	switch {
	case r.Level == LevelOperation && r.Operation != nil:
		return r.Operation.Source
	case r.Level == LevelApp && r.Policy != nil:
		return r.Policy.Source
	}
	return a.DefaultSource
}

// Reason is Dapr's denial message, plus the deciding rule.
func (r Result) Reason(a *ACL, caller certs.Identity, method, path string) string {
	id := "<none>"
	if !caller.TrustDomain.IsZero() {
		id = caller.String()
	}
	return "access control policy has denied access to id: " + id + " operation: " + path +
		" verb: " + method + " (" + r.Level.String() + " at " + r.Rule(a) + ")"
}

// Decide decides a call from caller (zero when there is no mTLS identity)
// with protocol "http" or "grpc", HTTP verb method and the normalized path.
// It does not allocate.
func (a *ACL) Decide(caller certs.Identity, protocol, method, path string) Result {
	action, res := a.decide(caller, protocol, method, path)
	res.Allow = action == Allow
	if a.Audit && !res.Allow {
		res.Allow, res.WouldDeny = true, true
	}
	return res
}

func (a *ACL) decide(caller certs.Identity, protocol, method, path string) (Action, Result) {
	res := Result{Level: LevelGlobal}
	action := a.Default
	if caller.TrustDomain.IsZero() {
		return action, res
	}
	p := a.find(caller)
	if p == nil {
		return action, res
	}
	res.Policy = p
	if p.Default != Unset {
		action, res.Level = p.Default, LevelApp
	}
	isHTTP := protocol != "grpc"
	m := p.grpc
	if isHTTP {
		m = p.http
	}
	op := m.Match(path)
	if op == nil {
		return action, res
	}
	res.Operation = op
	if !isHTTP {
		return op.Action, withLevel(res, LevelOperation)
	}
	if method == "" {
		// Dapr: a call without verb gets the app default.
		return p.Default, withLevel(res, LevelApp)
	}
	if va, ok := op.verbAction(method); ok {
		return va, withLevel(res, LevelOperation)
	}
	return action, res
}

func withLevel(r Result, l Level) Result { r.Level = l; return r }

// find returns the caller's policy: the exact appId+namespace entry if its
// trust domain matches, else the first glob entry that matches.
func (a *ACL) find(c certs.Identity) *Policy {
	td := c.TrustDomain.Name()
	if p := a.exact[appKey{c.AppID, c.Namespace}]; p != nil && GlobMatch(p.TrustDomain, td) {
		return p
	}
	for _, p := range a.globs {
		if GlobMatch(p.AppID, c.AppID) && GlobMatch(p.Namespace, c.Namespace) && GlobMatch(p.TrustDomain, td) {
			return p
		}
	}
	return nil
}

// Policies returns the compiled entries, exact ones first.
func (a *ACL) Policies() []*Policy {
	out := make([]*Policy, 0, len(a.exact)+len(a.globs))
	for _, p := range a.exact {
		out = append(out, p)
	}
	return append(out, a.globs...)
}

func hasGlob(s string) bool { return strings.IndexByte(s, '*') >= 0 }
