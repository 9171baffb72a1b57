package accesscontrol

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/meshd/meshd/config/daprconfig"
	"github.com/meshd/meshd/config/strictyaml"
)

// Error is a problem in a file, at a line.
type Error struct {
	File   string
	Line   int
	Reason string
}

func (e *Error) Error() string {
	return "accesscontrol: " + e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Reason
}

// Parse reads the Dapr Configuration documents in data (one or more YAML
// documents, each with kind: Configuration) and compiles the
// spec.accessControl of each. Documents without accessControl (or with an
// empty one, which Dapr treats as "no ACL") yield nothing. Unknown keys
// inside accessControl are errors, so a typo never silently changes a
// decision.
func Parse(file string, data []byte) ([]*ACL, error) {
	specs, err := daprconfig.Specs(file, data)
	if err != nil {
		var de *daprconfig.Error
		if errors.As(err, &de) {
			return nil, &Error{de.File, de.Line, de.Reason}
		}
		return nil, err
	}
	var out []*ACL
	for _, spec := range specs {
		acn := lookup(spec, "accessControl")
		if acn == nil {
			continue
		}
		acl, err := compile(file, acn)
		if err != nil {
			return nil, err
		}
		if acl != nil {
			out = append(out, acl)
		}
	}
	return out, nil
}

func lookup(m *yaml.Node, key string) *yaml.Node { return strictyaml.Lookup(m, key) }

// fields checks that m is a mapping with only the allowed keys.
func fields(file string, m *yaml.Node, what string, allowed ...string) error {
	if line, msg, ok := strictyaml.Fields(m, what, allowed...); !ok {
		return &Error{file, line, msg}
	}
	return nil
}

func scalar(file string, m *yaml.Node, key string) (string, int, error) {
	n := lookup(m, key)
	if n == nil {
		return "", m.Line, nil
	}
	if n.Kind != yaml.ScalarNode {
		return "", n.Line, &Error{file, n.Line, key + ": want a string"}
	}
	if n.Tag == "!!null" {
		return "", n.Line, nil
	}
	return n.Value, n.Line, nil
}

func compile(file string, acn *yaml.Node) (*ACL, error) {
	if acn.Kind == yaml.ScalarNode && acn.Tag == "!!null" {
		return nil, nil
	}
	if err := fields(file, acn, "accessControl", "defaultAction", "trustDomain", "policies", "mode"); err != nil {
		return nil, err
	}
	defStr, defLine, err := scalar(file, acn, "defaultAction")
	if err != nil {
		return nil, err
	}
	td, _, err := scalar(file, acn, "trustDomain")
	if err != nil {
		return nil, err
	}
	mode, modeLine, err := scalar(file, acn, "mode")
	if err != nil {
		return nil, err
	}
	pols := lookup(acn, "policies")
	if pols != nil && pols.Tag == "!!null" {
		pols = nil
	}
	if pols != nil && pols.Kind != yaml.SequenceNode {
		return nil, &Error{file, pols.Line, "policies: want a list"}
	}
	npol := 0
	if pols != nil {
		npol = len(pols.Content)
	}
	if td == "" && defStr == "" && npol == 0 && mode == "" {
		return nil, nil // Dapr: empty spec, no ACL
	}
	a := &ACL{Source: file, TrustDomain: td, exact: map[appKey]*Policy{}}
	if a.TrustDomain == "" {
		a.TrustDomain = DefaultTrustDomain
	}
	switch strings.ToLower(mode) {
	case "", "enforce":
	case "audit":
		a.Audit = true
	default:
		return nil, &Error{file, modeLine, fmt.Sprintf("mode %q: want enforce or audit", mode)}
	}
	if a.Default, err = parseAction(defStr); err != nil {
		return nil, &Error{file, defLine, "defaultAction: " + err.Error()}
	}
	a.DefaultSource = file + ":" + strconv.Itoa(defLine)
	if a.Default == Unset {
		a.DefaultSource = file + ":" + strconv.Itoa(acn.Line) + " (defaultAction unset)"
		// Dapr: unset + policies → deny; unset + no policies → allow.
		a.Default = Allow
		if npol > 0 {
			a.Default = Deny
		}
	}
	for i := 0; i < npol; i++ {
		p, err := compilePolicy(file, pols.Content[i])
		if err != nil {
			return nil, err
		}
		if p.glob {
			a.globs = append(a.globs, p)
			continue
		}
		k := appKey{p.AppID, p.Namespace}
		if prev := a.exact[k]; prev != nil {
			return nil, &Error{file, pols.Content[i].Line, fmt.Sprintf("duplicate policy for appId %q namespace %q (first at %s)", p.AppID, p.Namespace, prev.Source)}
		}
		a.exact[k] = p
	}
	return a, nil
}

func compilePolicy(file string, n *yaml.Node) (*Policy, error) {
	if err := fields(file, n, "policy", "appId", "defaultAction", "trustDomain", "namespace", "operations"); err != nil {
		return nil, err
	}
	p := &Policy{Source: file + ":" + strconv.Itoa(n.Line), http: NewMatcher(true), grpc: NewMatcher(false)}
	var err error
	var defStr string
	var line int
	if p.AppID, _, err = scalar(file, n, "appId"); err != nil {
		return nil, err
	}
	if p.Namespace, _, err = scalar(file, n, "namespace"); err != nil {
		return nil, err
	}
	if p.TrustDomain, _, err = scalar(file, n, "trustDomain"); err != nil {
		return nil, err
	}
	// SPIFFE trust domains are lower case (Dapr's docs write "myDomain").
	p.TrustDomain = strings.ToLower(p.TrustDomain)
	if defStr, line, err = scalar(file, n, "defaultAction"); err != nil {
		return nil, err
	}
	var missing []string
	for _, f := range []struct{ name, v string }{{"appId", p.AppID}, {"trustDomain", p.TrustDomain}, {"namespace", p.Namespace}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, &Error{file, n.Line, "policy: missing " + strings.Join(missing, ", ") + " (Dapr requires appId, trustDomain and namespace)"}
	}
	if p.Default, err = parseAction(defStr); err != nil {
		return nil, &Error{file, line, "defaultAction: " + err.Error()}
	}
	p.glob = hasGlob(p.AppID) || hasGlob(p.Namespace)
	ops := lookup(n, "operations")
	if ops == nil || ops.Tag == "!!null" {
		return p, nil
	}
	if ops.Kind != yaml.SequenceNode {
		return nil, &Error{file, ops.Line, "operations: want a list"}
	}
	for _, on := range ops.Content {
		if err := compileOperation(file, on, p); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func compileOperation(file string, on *yaml.Node, p *Policy) error {
	if err := fields(file, on, "operation", "name", "httpVerb", "action"); err != nil {
		return err
	}
	name, nameLine, err := scalar(file, on, "name")
	if err != nil {
		return err
	}
	actStr, actLine, err := scalar(file, on, "action")
	if err != nil {
		return err
	}
	act, err := parseAction(actStr)
	if err != nil {
		return &Error{file, actLine, err.Error()}
	}
	if act == Unset {
		act = Deny // Dapr's code: an empty action is not "allow"
	}
	var verbs []string
	if vn := lookup(on, "httpVerb"); vn != nil && vn.Tag != "!!null" {
		if vn.Kind != yaml.SequenceNode {
			return &Error{file, vn.Line, "httpVerb: want a list such as ['GET', 'POST'] or ['*']"}
		}
		for _, v := range vn.Content {
			if v.Kind != yaml.ScalarNode || strings.TrimSpace(v.Value) == "" {
				return &Error{file, v.Line, "httpVerb: want non-empty strings"}
			}
			verbs = append(verbs, strings.ToUpper(strings.TrimSpace(v.Value)))
		}
	}
	src := file + ":" + strconv.Itoa(on.Line)
	for _, m := range []*Matcher{p.http, p.grpc} {
		pat, err := CanonicalPattern(name, m.lower)
		if err != nil {
			return &Error{file, nameLine, err.Error()}
		}
		op := m.Add(&Operation{Name: pat, Source: src, Action: act, Verbs: map[string]Action{}})
		for _, v := range verbs {
			if _, seen := op.Verbs[v]; !seen {
				op.Verbs[v] = act
			}
		}
	}
	return nil
}
