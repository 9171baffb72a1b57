package main

import (
	"slices"
	"testing"
	"time"
)

func TestSingleDashArgs(t *testing.T) {
	in := []string{"-app-id", "a", "--http-port", "1", "-h", "-1", "-log-level=debug", "--", "-x", "y"}
	want := []string{"--app-id", "a", "--http-port", "1", "-h", "-1", "--log-level=debug", "--", "-x", "y"}
	if got := singleDashArgs(in); !slices.Equal(got, want) {
		t.Errorf("singleDashArgs(%q) = %q, want %q", in, got, want)
	}
}

func TestDaprDuration(t *testing.T) {
	for _, tc := range []struct {
		unit time.Duration
		in   string
		want time.Duration
		ok   bool
	}{
		{time.Second, "5", 5 * time.Second, true},
		{time.Second, "5s", 5 * time.Second, true},
		{time.Millisecond, "500", 500 * time.Millisecond, true},
		{time.Millisecond, "1.5s", 1500 * time.Millisecond, true},
		{time.Second, "0", 0, true},
		{time.Second, "-1", 0, false},
		{time.Second, "86401", 0, false},
		{time.Second, "soon", 0, false},
		{time.Second, "", 0, false},
	} {
		var d time.Duration
		v := newDaprDuration(&d, 7*time.Second, tc.unit)
		err := v.Set(tc.in)
		if (err == nil) != tc.ok || tc.ok && d != tc.want {
			t.Errorf("Set(%q) in %v: %v, %v; want %v, ok %v", tc.in, tc.unit, d, err, tc.want, tc.ok)
		}
	}
}

func TestIsLoopbackHost(t *testing.T) {
	for h, want := range map[string]bool{"127.0.0.1": true, "localhost": true, "[::1]": true, "::1": true, "127.0.0.2": true,
		"0.0.0.0": false, "10.0.0.1": false, "": false, "example.com": false} {
		if got := isLoopbackHost(h); got != want {
			t.Errorf("isLoopbackHost(%q) = %v", h, got)
		}
	}
}

func TestParseQuantity(t *testing.T) {
	for in, want := range map[string]int64{"4Mi": 4 << 20, "8M": 8e6, "1048576": 1 << 20, "512Ki": 512 << 10, "1Gi": 1 << 30, "2k": 2000, "-1": -1, "0": 0} {
		if got, err := parseQuantity(in); err != nil || got != want {
			t.Errorf("parseQuantity(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "Mi", "4.5Mi", "-2", "2Gi", "4MB", "x"} {
		if got, err := parseQuantity(in); err == nil {
			t.Errorf("parseQuantity(%q) = %d, want an error", in, got)
		}
	}
}

// FuzzParseQuantity: never a panic, never a size above 1 GiB or below -1.
func FuzzParseQuantity(f *testing.F) {
	for _, s := range []string{"4Mi", "8M", "-1", "1Gi", "9223372036854775807Ki", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseQuantity(s)
		if err == nil && (n < -1 || n > 1<<30) {
			t.Fatalf("parseQuantity(%q) = %d", s, n)
		}
	})
}
