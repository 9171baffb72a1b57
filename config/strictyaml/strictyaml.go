// Package strictyaml holds the small helpers meshd's strict YAML readers share
// (Dapr Configuration sections read by policy/accesscontrol and
// internal/daprconfig): key lookup in a mapping node, unknown-field checks
// that name the offending line, and the line of a yaml.v3 syntax error.
package strictyaml

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ErrLine returns the line yaml.v3 names in a syntax error ("yaml: line N:
// ..."), or 1 when it names none.
func ErrLine(err error) int {
	s := err.Error()
	if i := strings.Index(s, "line "); i >= 0 {
		j := i + 5
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if n, e := strconv.Atoi(s[i+5 : j]); e == nil {
			return n
		}
	}
	return 1
}

// Lookup returns the value of key in the mapping m, or nil.
func Lookup(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// Fields checks that m is a mapping holding only the allowed keys. On
// failure it returns the line to report and what is wrong, prefixed by what.
func Fields(m *yaml.Node, what string, allowed ...string) (line int, msg string, ok bool) {
	if m.Kind != yaml.MappingNode {
		return m.Line, what + ": want a mapping", false
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k := m.Content[i]
		if !slices.Contains(allowed, k.Value) {
			return k.Line, fmt.Sprintf("%s: unknown field %q (want one of %s)", what, k.Value, strings.Join(allowed, ", ")), false
		}
	}
	return 0, "", true
}
