package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/meshd/meshd/sidecar"
)

// TestPeerFlagsRejected: every bad keepalive, timeout, probe or check
// interval stops meshd before it starts, naming the flag and what it wants.
func TestPeerFlagsRejected(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--peer-keepalive", "-1s"}, "--peer-keepalive -1s: want at least 10ms, or 0 for none"},
		{[]string{"--peer-keepalive", "1ms"}, "--peer-keepalive 1ms: want at least 10ms, or 0 for none"},
		{[]string{"--peer-keepalive-timeout", "0"}, "--peer-keepalive-timeout 0s: want at least 10ms"},
		{[]string{"--peer-keepalive-timeout", "-2s"}, "--peer-keepalive-timeout -2s: want at least 10ms"},
		{[]string{"--ejection-probe-interval", "0"}, "--ejection-probe-interval 0s: want at least 10ms"},
		{[]string{"--ejection-check-interval", "-500ms"}, "--ejection-check-interval -500ms: want at least 10ms, or 0 for none"},
		{[]string{"--ejection-check-interval", "5"}, `invalid argument "5" for "--ejection-check-interval" flag`},
		{[]string{"--peer-keepalive", "soon"}, `invalid argument "soon" for "--peer-keepalive" flag`},
	} {
		cmd := newCommand()
		cmd.SetArgs(append([]string{"--app-id", "x"}, tc.args...))
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("meshd %v: err = %v; want one containing %q", tc.args, err, tc.want)
		}
	}
}

// TestPeerFlagsApply: the defaults and set values reach sidecar.Config; 0
// turns the keepalive and the checks off (negative in the Config).
func TestPeerFlagsApply(t *testing.T) {
	for _, tc := range []struct {
		args                      []string
		ka, kaTimeout, probe, chk time.Duration
	}{
		{nil, 500 * time.Millisecond, time.Second, 200 * time.Millisecond, 500 * time.Millisecond},
		{[]string{"--peer-keepalive", "2s", "--peer-keepalive-timeout", "3s", "--ejection-probe-interval", "1s", "--ejection-check-interval", "250ms"},
			2 * time.Second, 3 * time.Second, time.Second, 250 * time.Millisecond},
		{[]string{"--peer-keepalive", "0", "--ejection-check-interval", "0"}, -1, time.Second, 200 * time.Millisecond, -1},
	} {
		f := pflag.NewFlagSet("meshd", pflag.ContinueOnError)
		pf := addPeerFlags(f)
		if err := f.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		var cfg sidecar.Config
		if err := pf.apply(&cfg); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if cfg.PeerKeepalive != tc.ka || cfg.PeerKeepaliveTimeout != tc.kaTimeout || cfg.EjectionProbeInterval != tc.probe || cfg.EjectionCheckInterval != tc.chk {
			t.Errorf("%v: keepalive %s timeout %s probe %s check %s; want %s %s %s %s", tc.args,
				cfg.PeerKeepalive, cfg.PeerKeepaliveTimeout, cfg.EjectionProbeInterval, cfg.EjectionCheckInterval,
				tc.ka, tc.kaTimeout, tc.probe, tc.chk)
		}
	}
}
