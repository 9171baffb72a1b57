package main

import (
	"strings"
	"testing"
)

func TestParseBinaries(t *testing.T) {
	got, err := parseBinaries([]string{"amd64=bin/linux_amd64/meshd", "arm64=bin/linux_arm64/meshd"})
	if err != nil || len(got) != 2 || got["arm64"] != "bin/linux_arm64/meshd" {
		t.Errorf("parseBinaries = %v, %v", got, err)
	}
	for _, c := range []struct {
		in   []string
		want string
	}{
		{[]string{"bin/meshd"}, "want ARCH=FILE"},
		{[]string{"=bin/meshd"}, "want ARCH=FILE"},
		{[]string{"amd64="}, "want ARCH=FILE"},
		{[]string{"amd64=a", "amd64=b"}, "amd64 given twice"},
	} {
		if _, err := parseBinaries(c.in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parseBinaries(%q): %v, want %q", c.in, err, c.want)
		}
	}
}
