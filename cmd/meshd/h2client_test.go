package main

import (
	"io"
	"strings"
	"testing"
)

// TestH2ClientFlag: --h2-client takes h2 or nethttp (MESHD_H2_CLIENT sets
// its default); anything else stops meshd naming the flag.
func TestH2ClientFlag(t *testing.T) {
	for _, v := range []string{"h2", "nethttp"} {
		if _, err := parseH2Client(v); err != nil {
			t.Errorf("%s: %v", v, err)
		}
	}
	if netHTTP, _ := parseH2Client("nethttp"); !netHTTP {
		t.Error("nethttp does not select net/http")
	}
	for _, args := range [][]string{{"--h2-client", "grpc"}, {"--h2-client", ""}} {
		cmd := newCommand()
		cmd.SetArgs(append([]string{"--app-id", "x"}, args...))
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), "--h2-client") || !strings.Contains(err.Error(), "want h2 or nethttp") {
			t.Errorf("meshd %v: err = %v", args, err)
		}
	}
	t.Setenv("MESHD_H2_CLIENT", "bogus")
	cmd := newCommand()
	cmd.SetArgs([]string{"--app-id", "x"})
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), `--h2-client "bogus"`) {
		t.Errorf("MESHD_H2_CLIENT=bogus: err = %v", err)
	}
}
