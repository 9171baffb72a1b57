package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Prepare makes root one of meshd's commands: --version and `version`, plain
// boolean flags in every subcommand's help, and errors left to Execute (cobra
// prints neither the error nor the usage). Call it after all subcommands are
// added. Preparing a command twice (its main and a test helper) changes
// nothing the second time.
func Prepare(root *cobra.Command) {
	if root.Annotations[preparedKey] != "" {
		return
	}
	if root.Annotations == nil {
		root.Annotations = map[string]string{}
	}
	root.Annotations[preparedKey] = "yes"
	addVersion(root)
	root.InitDefaultCompletionCmd()
	walk(root, func(c *cobra.Command) {
		c.SilenceErrors = true
		c.SilenceUsage = true
		c.InitDefaultHelpFlag()
		c.InitDefaultVersionFlag()
		plainBools(c.Flags())
		plainBools(c.PersistentFlags())
	})
}

// preparedKey marks a command Prepare has made ready (cobra.Command.Annotations).
const preparedKey = "meshd.io/cli-prepared"

func walk(c *cobra.Command, fn func(*cobra.Command)) {
	fn(c)
	for _, s := range c.Commands() {
		walk(s, fn)
	}
}

// plainBool is a boolean flag value that pflag shows as `--flag` in help,
// not `--flag[=true|false]` (pflag v1.1.0 shows the latter for every value
// that says IsBoolFlag). Parsing is unchanged: `--flag`, `--flag=false`.
type plainBool struct{ v pflag.Value }

func (b plainBool) String() string     { return b.v.String() }
func (b plainBool) Set(s string) error { return b.v.Set(s) }
func (b plainBool) Type() string       { return b.v.Type() }

func plainBools(fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		if _, done := f.Value.(plainBool); !done && f.Value.Type() == "bool" {
			f.Value = plainBool{f.Value}
			if f.NoOptDefVal == "" {
				f.NoOptDefVal = "true"
			}
		}
	})
}

// Execute runs root with args and returns the error it ended with, after
// printing it once to stderr as "PROGRAM: message" (a message that already
// starts with "PROGRAM: " keeps one). Errors that are only an exit status
// (errors.Is(err, Quiet) or an ExitError) print nothing.
func Execute(root *cobra.Command, args []string, stderr io.Writer) error {
	root.SetArgs(args)
	err := root.Execute()
	if err != nil && !errors.Is(err, Quiet) {
		var ee *ExitError
		if !errors.As(err, &ee) || ee.Err != nil {
			fmt.Fprintln(stderr, Message(root.Name(), err))
		}
	}
	return err
}

// Message is err as one line prefixed once with prog.
func Message(prog string, err error) string {
	msg := err.Error()
	p := prog + ": "
	for strings.HasPrefix(msg, p) {
		msg = msg[len(p):]
	}
	return p + msg
}

// Quiet is an error that Execute does not print: the command has already
// said what happened (e.g. test results), only the exit code is left.
var Quiet = errors.New("quiet")

// ExitError asks the main to exit with Code; Err, when not nil, is printed.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode is the process exit code for the error Execute returned: 0 for
// nil, ExitError's Code, else 1.
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return 1
}
