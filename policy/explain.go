package policy

import (
	"context"
	"fmt"
	"sort"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/meshd/meshd/policy/authz"
)

// Explanation is a decision with the steps and rules behind it: the answer
// to "why was I denied?".
type Explanation struct {
	Allow  bool
	Audit  bool
	Reason string
	Rule   string
	// Steps are the evaluation steps, mesh-wide first.
	Steps []string
	// Matched lists the Rego rules whose bodies succeeded, as
	// "file:line: head".
	Matched []string
}

type regoTrace struct{ buf *topdown.BufferTracer }

func newRegoTrace() *regoTrace { return &regoTrace{buf: topdown.NewBufferTracer()} }

// Explain decides req like Authorize (without logging it) and says why.
func (e *Engine) Explain(ctx context.Context, req authz.Request) Explanation {
	tr := &trace{}
	tr.add("caller %s -> %s: %s %s %s", identityString(req.Caller), req.Destination, req.Protocol, req.Method, req.Path)
	o := e.decide(ctx, e.cur.Load(), &req, tr)
	x := Explanation{Allow: o.allow, Audit: o.audit, Reason: o.reason, Rule: o.rule, Steps: tr.lines}
	if o.audit {
		x.Steps = append(x.Steps, "audit: "+o.auditReason)
	}
	if tr.rego != nil {
		seen := map[string]bool{}
		for _, ev := range *tr.rego.buf {
			if ev.Op != topdown.ExitOp {
				continue
			}
			r, ok := ev.Node.(*ast.Rule)
			if !ok || r.Location == nil || r.Location.File == wrapperFile {
				continue
			}
			line := fmt.Sprintf("%s:%d: %s", r.Location.File, r.Location.Row, firstLine(string(r.Location.Text)))
			if !seen[line] {
				seen[line] = true
				x.Matched = append(x.Matched, line)
			}
		}
		sort.Strings(x.Matched)
	}
	return x
}

func firstLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			return s[:i] + " ..."
		}
	}
	return s
}
