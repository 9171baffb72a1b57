package policy

import (
	"sort"

	"github.com/meshd/meshd/policy/accesscontrol"
)

// Modes of a policy set (Mode.Mode).
const (
	// ModeEnforce: every rule in force decides (no accessControl is in
	// audit mode).
	ModeEnforce = "enforce"
	// ModeAudit: the set has accessControl documents only, all in audit
	// mode: every call is allowed, and the ones enforcing would deny are
	// logged as "audit: would deny".
	ModeAudit = "audit"
	// ModeMixed: some accessControl documents are in audit mode, other
	// rules (Rego, enforced accessControl) decide.
	ModeMixed = "mixed"
)

// Mode says how the policy set in force decides.
type Mode struct {
	// Mode is ModeEnforce, ModeAudit or ModeMixed.
	Mode string
	// Default decides namespaces without any policy.
	Default Default
	// Namespaces have a policy of their own; Mesh is true when mesh-wide
	// rules (_mesh/) are loaded.
	Namespaces []string
	Mesh       bool
	// Files is the number of files loaded; AuditFiles the accessControl
	// documents in audit mode (relative names, as in Snapshot.Files).
	Files      int
	AuditFiles []string
}

// Mode returns how the policy set in force decides.
func (e *Engine) Mode() Mode {
	s := e.cur.Load()
	m := Mode{Default: e.opts.Default, Namespaces: s.Namespaces(), Files: len(s.Files),
		Mesh: s.meshRego != nil || len(s.meshACLs) > 0}
	var audit, enforce int
	count := func(acls []*accesscontrol.ACL) {
		for _, a := range acls {
			if a.Audit {
				audit++
				m.AuditFiles = append(m.AuditFiles, a.Source)
			} else {
				enforce++
			}
		}
	}
	count(s.meshACLs)
	count(s.configACLs)
	if s.meshRego != nil {
		enforce++
	}
	for _, ns := range s.ns {
		count(ns.acls)
		if ns.rego != nil {
			enforce++
		}
	}
	sort.Strings(m.AuditFiles)
	switch {
	case audit > 0 && enforce == 0:
		m.Mode = ModeAudit
	case audit > 0:
		m.Mode = ModeMixed
	default:
		m.Mode = ModeEnforce
	}
	return m
}
