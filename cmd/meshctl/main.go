// Command meshctl is the meshd command-line tool. `meshctl policy test DIR`
// runs the Rego tests of a policy directory; `meshctl policy explain` says
// how the policy decides one call, and why.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// errDenied makes explain exit with code 2 when the call is denied.
var errDenied = errors.New("denied")

// errTestsFailed makes test exit with code 1 after printing the results.
var errTestsFailed = errors.New("tests failed")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes meshctl with args and returns the exit code: 0 success (or
// allowed), 1 error or failed tests, 2 denied.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := newRootCommand()
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	err := cmd.Execute()
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errDenied):
		return 2
	case errors.Is(err, errTestsFailed):
		return 1
	}
	fmt.Fprintln(stderr, "meshctl:", err)
	return 1
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "meshctl",
		Short:         "meshd command-line tool",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newPolicyCommand(), newXDSCommand(), newSVIDCommand())
	return root
}
