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
			got, ok := sysmonEnv(tc.in)
			if ok != (tc.want != nil) || !slices.Equal(got, tc.want) {
				t.Fatalf("sysmonEnv(%q) = %q, %v; want %q", tc.in, got, ok, tc.want)
			}
		})
	}
}
