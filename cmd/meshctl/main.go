// Command meshctl is the meshd command-line tool. `meshctl policy test DIR`
// runs the Rego tests of a policy directory; `meshctl policy explain` says
// how the policy decides one call, and why.
package main

import (
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/internal/cli"
)

// errDenied makes explain exit with code 2 when the call is denied.
var errDenied = &cli.ExitError{Code: 2}

// errTestsFailed makes test exit with code 1 after printing the results.
var errTestsFailed = &cli.ExitError{Code: 1}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes meshctl with args and returns the exit code: 0 success (or
// allowed), 1 error or failed tests, 2 denied; `meshctl run` exits with its
// app's code.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := newRootCommand()
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	return cli.ExitCode(cli.Execute(cmd, args, stderr))
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "meshctl",
		Short: "meshd command-line tool: a local mesh (init, run), what runs (list, status), policy tools",
		Example: `  meshctl init                                   # a local sentry for this user
  meshctl run --app-id orders --app-port 3000 -- ./orders --port 3000
  meshctl list
  meshctl policy explain --policy-dir policies --from spiffe://cluster.local/ns/default/web --to orders`,
	}
	root.AddCommand(newPolicyCommand(), newXDSCommand(), newSVIDCommand())
	addLocalCommands(root)
	cli.Prepare(root)
	return root
}
