package main

import (
	"runtime"
	"testing"
)

// TestSetMemProfiling: heap-profile sampling stays at the Go default only
// with --enable-profiling.
func TestSetMemProfiling(t *testing.T) {
	def := runtime.MemProfileRate
	t.Cleanup(func() { runtime.MemProfileRate = def })
	setMemProfiling(true)
	if runtime.MemProfileRate != def {
		t.Fatalf("with profiling: rate %d, want the default %d", runtime.MemProfileRate, def)
	}
	setMemProfiling(false)
	if runtime.MemProfileRate != 0 {
		t.Fatalf("without profiling: rate %d, want 0", runtime.MemProfileRate)
	}
}
