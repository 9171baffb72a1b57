package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/policy"
	"github.com/meshd/meshd/policy/authz"
	"github.com/meshd/meshd/proxy/route"
)

func newPolicyCommand() *cobra.Command {
	c := &cobra.Command{Use: "policy", Short: "test and explain meshd policies"}
	c.AddCommand(newPolicyTestCommand(), newPolicyExplainCommand(), newPolicyPreviewCommand())
	return c
}

func newPolicyTestCommand() *cobra.Command {
	var verbose bool
	c := &cobra.Command{
		Use:   "test DIR",
		Short: "run the Rego tests (*_test.rego) of a policy directory",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			results, err := policy.RunTests(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			pass, fail := 0, 0
			for _, r := range results {
				ok := r.Pass || r.Skip
				if ok {
					pass++
				} else {
					fail++
				}
				if verbose || !ok {
					fmt.Fprintln(out, r)
				}
			}
			fmt.Fprintf(out, "PASS: %d/%d\n", pass, pass+fail)
			if len(results) == 0 {
				return fmt.Errorf("no tests (test_* rules in *_test.rego) found in %s", args[0])
			}
			if fail > 0 {
				fmt.Fprintf(out, "FAIL: %d/%d\n", fail, pass+fail)
				return errTestsFailed
			}
			return nil
		},
	}
	c.Flags().BoolVarP(&verbose, "verbose", "v", false, "print every test, not only failures")
	return c
}

func newPolicyExplainCommand() *cobra.Command {
	var (
		dir, config, def, from, to, method, path, protocol, query string
		headers                                                   []string
	)
	c := &cobra.Command{
		Use:   "explain --policy-dir D --from spiffe://TD/ns/NS/APP --to APP.NS --method GET --path /x",
		Short: "print how the policy decides one call, which rules matched and why (exit 2 when denied)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			if dir == "" && config == "" {
				return fmt.Errorf("--policy-dir or --config is required")
			}
			d, err := policy.ParseDefault(def)
			if err != nil {
				return err
			}
			var caller certs.Identity
			if from != "" && from != "none" {
				if caller, err = certs.ParseIdentity(from); err != nil {
					return fmt.Errorf("--from: %w", err)
				}
			}
			dest, err := route.ParseTarget(to, discovery.DefaultNamespace)
			if err != nil {
				return fmt.Errorf("--to: %w", err)
			}
			if protocol != authz.ProtocolHTTP && protocol != authz.ProtocolGRPC {
				return fmt.Errorf("--protocol %q: want http or grpc", protocol)
			}
			// The same normalization the data plane applies before policy.
			norm, err := route.Normalize(path)
			if err != nil {
				fmt.Fprintf(out, "decision: REJECTED (400 before policy)\nreason: %v\n", err)
				return errDenied
			}
			h := http.Header{}
			for _, kv := range headers {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("--header %q: want name=value", kv)
				}
				h.Add(k, v)
			}
			e, err := policy.New(cmd.Context(), policy.Options{Source: policy.Source{Dir: dir, ConfigFile: config},
				Default: d, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				return err
			}
			x := e.Explain(context.WithoutCancel(cmd.Context()), authz.Request{Caller: caller, Destination: dest,
				Protocol: protocol, Method: strings.ToUpper(method), Path: norm, Query: query, Header: h})
			verdict := "ALLOW"
			switch {
			case x.Allow && x.Audit:
				verdict = "ALLOW (audit mode: enforcing would deny)"
			case !x.Allow:
				verdict = "DENY (403)"
			}
			fmt.Fprintf(out, "decision: %s\n", verdict)
			if norm != path {
				fmt.Fprintf(out, "path: %s (normalized from %s)\n", norm, path)
			}
			if x.Reason != "" {
				fmt.Fprintf(out, "reason: %s\n", x.Reason)
			}
			fmt.Fprintf(out, "decided by: %s\n", x.Rule)
			fmt.Fprintln(out, "steps:")
			for _, s := range x.Steps {
				fmt.Fprintf(out, "  - %s\n", s)
			}
			if len(x.Matched) > 0 {
				fmt.Fprintln(out, "rego rules that matched:")
				for _, m := range x.Matched {
					fmt.Fprintf(out, "  - %s\n", m)
				}
			}
			if !x.Allow {
				return errDenied
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&dir, "policy-dir", "", "policy directory")
	f.StringVar(&config, "config", "", "Dapr Configuration YAML (as meshd --config)")
	f.StringVar(&def, "policy-default", "allow", "decision for namespaces without policy: allow or deny")
	f.StringVar(&from, "from", "", "caller SPIFFE ID, e.g. spiffe://cluster.local/ns/default/frontend (none: no mTLS identity)")
	f.StringVar(&to, "to", "", "destination app[.namespace]")
	f.StringVar(&method, "method", "GET", "HTTP verb (POST for gRPC)")
	f.StringVar(&path, "path", "/", "path (HTTP) or /pkg.Service/Method (gRPC), normalized as the sidecar does")
	f.StringVar(&protocol, "protocol", "http", "http or grpc")
	f.StringVar(&query, "query", "", "raw query string")
	f.StringArrayVar(&headers, "header", nil, "request header name=value (repeatable)")
	_ = c.MarkFlagRequired("to")
	_ = c.MarkFlagRequired("from")
	return c
}
