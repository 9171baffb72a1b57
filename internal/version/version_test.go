package version

import (
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	bi := func(v string, kv ...string) *debug.BuildInfo {
		b := &debug.BuildInfo{Main: debug.Module{Version: v}}
		for i := 0; i+1 < len(kv); i += 2 {
			b.Settings = append(b.Settings, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return b
	}
	for _, tc := range []struct {
		b    *debug.BuildInfo
		want string
	}{
		{bi("v1.2.3"), "v1.2.3"},
		{bi("(devel)"), "dev"},
		{bi("(devel)", "vcs.revision", "0123456789abcdef0123", "vcs.modified", "false"), "dev+0123456789ab"},
		{bi("(devel)", "vcs.revision", "0123456789abcdef0123", "vcs.modified", "true"), "dev+0123456789ab-dirty"},
		{bi("v0.0.0-20260101000000-0123456789ab"), "v0.0.0-20260101000000-0123456789ab"},
	} {
		if got := fromBuildInfo(tc.b); got != tc.want {
			t.Errorf("fromBuildInfo(%+v) = %q, want %q", tc.b, got, tc.want)
		}
	}
}
