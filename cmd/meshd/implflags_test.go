package main

import (
	"io"
	"strings"
	"testing"
)

// TestImplFlagsRejected: a server or client implementation meshd does not
// have stops it before it starts, naming the flag and the choices; the
// environment default is checked the same way.
func TestImplFlagsRejected(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"--h2-server", "grpc"}, "", `--h2-server "grpc": want h2 or nethttp`},
		{[]string{"--h2-server", "h1"}, "", `--h2-server "h1": want h2 or nethttp`},
		{nil, "H2", `--h2-server "H2": want h2 or nethttp`},
		{[]string{"--h1-server", "h2"}, "", `--h1-server "h2": want h1 or nethttp`},
	} {
		t.Setenv("MESHD_H2_SERVER", tc.env)
		cmd := newCommand()
		cmd.SetArgs(append([]string{"--app-id", "x"}, tc.args...))
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("meshd %v (MESHD_H2_SERVER=%q): err = %v; want one containing %q", tc.args, tc.env, err, tc.want)
		}
	}
}
