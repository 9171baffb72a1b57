package cli

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestMessage(t *testing.T) {
	for _, tc := range []struct{ err, want string }{
		{"boom", "sentry: boom"},
		{"sentry: boom", "sentry: boom"},
		{"sentry: sentry: boom", "sentry: boom"},
		{"sentryclient: boom", "sentry: sentryclient: boom"},
	} {
		if got := Message("sentry", errors.New(tc.err)); got != tc.want {
			t.Errorf("Message(%q) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func newTestRoot(ran *bool) *cobra.Command {
	var flag bool
	root := &cobra.Command{Use: "prog", RunE: func(*cobra.Command, []string) error { *ran = flag; return nil }}
	root.Flags().BoolVar(&flag, "flag", false, "a boolean")
	sub := &cobra.Command{Use: "fail", RunE: func(*cobra.Command, []string) error { return errors.New("prog: it broke") }}
	code := &cobra.Command{Use: "code", RunE: func(*cobra.Command, []string) error { return &ExitError{Code: 3} }}
	root.AddCommand(sub, code)
	Prepare(root)
	return root
}

func TestExecute(t *testing.T) {
	var ran bool
	var out, errOut bytes.Buffer
	root := newTestRoot(&ran)
	root.SetOut(&out)
	if err := Execute(root, []string{"--flag"}, &errOut); err != nil || !ran {
		t.Fatalf("--flag: err %v ran %v", err, ran)
	}
	if err := Execute(root, []string{"--flag=false"}, &errOut); err != nil || ran {
		t.Fatalf("--flag=false: err %v ran %v", err, ran)
	}
	out.Reset()
	_ = Execute(root, []string{"--help"}, &errOut)
	if strings.Contains(out.String(), "[=true|false]") || !strings.Contains(out.String(), "--flag ") {
		t.Errorf("help:\n%s", out.String())
	}
	out.Reset()
	root = newTestRoot(&ran) // flags keep their values between runs
	root.SetOut(&out)
	if err := Execute(root, []string{"--version"}, &errOut); err != nil || !strings.HasPrefix(out.String(), "prog ") {
		t.Errorf("--version: %v %q", err, out.String())
	}
	errOut.Reset()
	err := Execute(root, []string{"fail"}, &errOut)
	if ExitCode(err) != 1 || errOut.String() != "prog: it broke\n" {
		t.Errorf("fail: code %d, stderr %q", ExitCode(err), errOut.String())
	}
	errOut.Reset()
	err = Execute(root, []string{"code"}, &errOut)
	if ExitCode(err) != 3 || errOut.String() != "" {
		t.Errorf("code: code %d, stderr %q", ExitCode(err), errOut.String())
	}
	if ExitCode(nil) != 0 || ExitCode(fmt.Errorf("x: %w", &ExitError{Code: 5})) != 5 {
		t.Error("ExitCode")
	}
}

// TestPrepareTwice: a command prepared by its main and again by a test
// helper has one `version` command and the same help.
func TestPrepareTwice(t *testing.T) {
	help := func(twice bool) string {
		root := &cobra.Command{Use: "prog", Short: "a program"}
		root.AddCommand(&cobra.Command{Use: "sub", Short: "a subcommand", Run: func(*cobra.Command, []string) {}})
		root.Flags().Bool("flag", false, "a boolean")
		Prepare(root)
		if twice {
			Prepare(root)
		}
		var out bytes.Buffer
		root.SetOut(&out)
		if err := Execute(root, []string{"--help"}, &out); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	once, twice := help(false), help(true)
	if once != twice {
		t.Errorf("help after two Prepare calls differs:\n--- once ---\n%s--- twice ---\n%s", once, twice)
	}
	if n := strings.Count(twice, "\n  version "); n != 1 {
		t.Errorf("%d version commands in help:\n%s", n, twice)
	}
}
