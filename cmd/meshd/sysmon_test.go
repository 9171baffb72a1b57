package main

import (
	"slices"
	"testing"
)

func TestSysmonEnv(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		want []string // nil: no re-exec
	}{
		{"no GODEBUG", []string{"PATH=/bin"}, []string{"PATH=/bin", "GODEBUG=" + sysmonSetting}},
		{"other settings kept", []string{"GODEBUG=http2debug=1", "HOME=/"}, []string{"GODEBUG=http2debug=1," + sysmonSetting, "HOME=/"}},
		{"empty GODEBUG", []string{"GODEBUG="}, []string{"GODEBUG=" + sysmonSetting}},
		{"already set: the re-executed process", []string{"GODEBUG=" + sysmonSetting}, nil},
		{"user's own schedtrace wins", []string{"GODEBUG=gctrace=1, schedtrace=1000"}, nil},
		{"opt-out", []string{"MESHD_SYSMON=default"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := sysmonEnv(tc.in, false)
			if ok != (tc.want != nil) || !slices.Equal(got, tc.want) {
				t.Fatalf("sysmonEnv(%q) = %q, %v; want %q", tc.in, got, ok, tc.want)
			}
		})
	}
}

// TestSysmonEnvBuiltIn: a binary linked with the setting as its runtime
// default (make build) re-executes only to honour MESHD_SYSMON=default,
// with schedtrace=0, and never over the user's own schedtrace.
func TestSysmonEnvBuiltIn(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		want []string // nil: no re-exec
	}{
		{"no GODEBUG: runs as is", []string{"PATH=/bin"}, nil},
		{"other settings: runs as is", []string{"GODEBUG=http2debug=1"}, nil},
		{"opt-out", []string{"MESHD_SYSMON=default", "PATH=/bin"}, []string{"MESHD_SYSMON=default", "PATH=/bin", "GODEBUG=schedtrace=0"}},
		{"opt-out keeps other settings", []string{"GODEBUG=gctrace=1", "MESHD_SYSMON=default"}, []string{"GODEBUG=gctrace=1,schedtrace=0", "MESHD_SYSMON=default"}},
		{"opt-out, the re-executed process", []string{"MESHD_SYSMON=default", "GODEBUG=schedtrace=0"}, nil},
		{"user's own schedtrace wins", []string{"MESHD_SYSMON=default", "GODEBUG=schedtrace=1000"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := sysmonEnv(tc.in, true)
			if ok != (tc.want != nil) || !slices.Equal(got, tc.want) {
				t.Fatalf("sysmonEnv(%q, true) = %q, %v; want %q", tc.in, got, ok, tc.want)
			}
		})
	}
}

// TestSysmonBuiltIn: only the exact setting among the linked-in ones counts.
func TestSysmonBuiltIn(t *testing.T) {
	defer func(v string) { builtinGODEBUG = v }(builtinGODEBUG)
	for in, want := range map[string]bool{"": false, sysmonSetting: true, "gctrace=1," + sysmonSetting: true, "schedtrace=1000": false} {
		builtinGODEBUG = in
		if got := sysmonBuiltIn(); got != want {
			t.Errorf("builtinGODEBUG %q: sysmonBuiltIn() = %v, want %v", in, got, want)
		}
	}
}
