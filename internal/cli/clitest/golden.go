// Package clitest holds what the tests of meshd's commands share: golden
// files of every command's --help.
package clitest

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/internal/cli"
)

// HelpGolden runs `--help` of every command of the program newRoot makes
// (prepared with cli.Prepare, as its main does: version and completion
// included) and compares each with dir/PROGRAM[-SUB...].txt; with update
// it rewrites them instead. A golden file of a command that no longer
// exists is an error.
func HelpGolden(t *testing.T, newRoot func() *cobra.Command, dir string, update bool) {
	t.Helper()
	root := newRoot()
	cli.Prepare(root)
	prog := root.Name()
	var paths [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		paths = append(paths, path)
		for _, s := range c.Commands() {
			walk(s, append(append([]string{}, path...), s.Name()))
		}
	}
	walk(root, nil)
	seen := map[string]bool{}
	for _, p := range paths {
		name := strings.Join(append([]string{prog}, p...), "-")
		file := filepath.Join(dir, name+".txt")
		seen[filepath.Base(file)] = true
		c := newRoot()
		cli.Prepare(c)
		var out bytes.Buffer
		c.SetOut(&out)
		c.SetErr(&out)
		if err := cli.Execute(c, append(append([]string{}, p...), "--help"), &out); err != nil {
			t.Errorf("%s --help: %v\n%s", name, err, out.String())
			continue
		}
		if update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, out.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(file)
		if err != nil {
			t.Errorf("%s: %v (go test -run TestHelpGolden -update writes it)", name, err)
			continue
		}
		if out.String() != string(want) {
			t.Errorf("%s --help differs from %s:\n--- got ---\n%s--- want ---\n%s", name, file, out.String(), want)
		}
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !seen[e.Name()] && !update {
			t.Errorf("%s: no such command any more", filepath.Join(dir, e.Name()))
		}
	}
}
