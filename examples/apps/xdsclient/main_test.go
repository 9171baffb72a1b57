package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestBadInput: every bad target and command is refused with a clear
// error before any call; "quit" ends cleanly. (The calls themselves are
// proven end to end in tests/xdsproxyless.)
func TestBadInput(t *testing.T) {
	for _, c := range []struct{ target, in, want string }{
		{"", "quit\n", "is not xds:///"},
		{"dns:///echo.default", "quit\n", "is not xds:///"},
		{"xds:///echo.default", "bogus 3\n", "bad command"},
		{"xds:///echo.default", "unary\n", "bad command"},
		{"xds:///echo.default", "unary 1 2\n", "bad command"},
		{"xds:///echo.default", "unary 0\n", "bad count"},
		{"xds:///echo.default", "stream -1\n", "bad count"},
		{"xds:///echo.default", "stream x\n", "bad count"},
	} {
		var out bytes.Buffer
		err := run(c.target, time.Second, strings.NewReader(c.in), &out)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("target %q, input %q: %v, want an error with %q", c.target, c.in, err, c.want)
		}
		if out.Len() != 0 {
			t.Errorf("target %q, input %q: printed %q", c.target, c.in, out.String())
		}
	}
	var out bytes.Buffer
	if err := run("xds:///echo.default", time.Second, strings.NewReader("\nquit\nunary 1\n"), &out); err != nil || out.Len() != 0 {
		t.Errorf("quit: %v, printed %q", err, out.String())
	}
}
