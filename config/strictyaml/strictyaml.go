// Package strictyaml is meshd's one strict YAML reader. Every config file
// meshd reads (the resolver configs, the Dapr Configuration, accessControl,
// Resiliency) goes through it, so they refuse the same things the same way:
// unknown fields, values of the wrong type and extra documents are errors
// that name their line.
//
// Decode reads one document into a struct (yaml.v3 with KnownFields);
// Documents hands node-walking parsers each document's root, with the
// helpers they share (Lookup, Fields, ErrLine).
package strictyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

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

// ErrEmpty is returned by Decode for an input without a document.
var ErrEmpty = errors.New("strictyaml: no YAML document")

// Decode decodes the one YAML document of data into v strictly: an unknown
// field or a value of the wrong type is an error naming its line (yaml.v3's
// "line N: ..."), and only empty documents may follow the first ("---" at
// the end). An input without a document leaves v as it is and returns
// ErrEmpty.
func Decode(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return ErrEmpty
		}
		return err
	}
	for {
		var extra yaml.Node
		err := dec.Decode(&extra)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil || !emptyDoc(&extra) {
			return errors.New("more than one YAML document")
		}
	}
}

func emptyDoc(n *yaml.Node) bool {
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	return n.Kind == 0 || n.Kind == yaml.DocumentNode && len(n.Content) == 0 ||
		n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// Documents returns the root node of each document of data, in order,
// skipping empty and null documents. A syntax error is returned as yaml.v3
// gives it (ErrLine finds its line).
func Documents(data []byte) ([]*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []*yaml.Node
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(doc.Content) == 0 {
			continue
		}
		root := doc.Content[0]
		if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
			continue
		}
		out = append(out, root)
	}
}

// Duration is a Go duration in YAML ("1s", "500ms", "10m"); negative
// durations and non-scalars are refused with their line.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as 1s", n.Line)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (write 1s, 500ms, 10m): %w", n.Line, n.Value, err)
	}
	if v < 0 {
		return fmt.Errorf("line %d: negative duration %q", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}
