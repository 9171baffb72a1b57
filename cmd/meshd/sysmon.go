package main

import (
	"os"
	"slices"
	"strings"
	"syscall"
)

// envSysmon=default turns the re-exec of tuneSysmon off.
const envSysmon = "MESHD_SYSMON"

// sysmonSetting keeps the Go runtime's system monitor (sysmon) out of its
// deep sleep. sysmon parks whenever every P is idle, and the next system
// call wakes it, after which it naps in 20 µs steps for a millisecond. A
// sidecar at a moderate rate goes idle between almost every pair of calls,
// so each call paid a futex wake-up plus ~50 nanosleeps of another thread.
// On the 2-vCPU bench VM, where a context switch is expensive, that was
// 45% of the sidecar's CPU at 1000 req/s (312 → 172 µs per call for the
// caller sidecar, measured with perf stat). With a schedtrace interval set,
// sysmon never deep-sleeps and backs off to one wake-up every 10 ms when
// there is nothing to retake: ~100 wake-ups a second even when idle. The
// interval is the largest the runtime accepts (24.8 days), so the trace line
// it exists for is printed at most once per 24.8 days of host uptime.
const sysmonSetting = "schedtrace=2147483647"

// builtinGODEBUG is the runtime's compile-time GODEBUG default as make
// build and make image link it in (-X runtime.godebugDefault=... and the
// same value here, MESHD_LDFLAGS in the Makefile). When it holds
// sysmonSetting the runtime starts with it and no re-exec is needed: the
// re-exec ran every package's init twice, ~12–15 ms of CPU at each start
// on the bench VM (perf stat, meshd --version, 16 vs 29–31 ms). A plain
// go build leaves it empty and meshd re-executes as before.
var builtinGODEBUG string

// sysmonBuiltIn reports whether the binary was linked with sysmonSetting.
func sysmonBuiltIn() bool {
	return slices.Contains(strings.Split(builtinGODEBUG, ","), sysmonSetting)
}

// sysmonEnv returns the environment to re-exec with, or ok false when the
// setting is already in place, the user chose their own schedtrace, or
// MESHD_SYSMON=default asks for the runtime's behaviour. builtIn says the
// binary carries sysmonSetting as its compile-time default: then only
// MESHD_SYSMON=default needs a re-exec, with schedtrace=0 (the runtime's
// default) in GODEBUG, which the runtime applies after the built-in one.
func sysmonEnv(environ []string, builtIn bool) (env []string, ok bool) {
	godebug := ""
	at := -1
	optOut := false
	for i, kv := range environ {
		switch {
		case kv == envSysmon+"=default":
			optOut = true
		case strings.HasPrefix(kv, "GODEBUG="):
			godebug, at = kv[len("GODEBUG="):], i
		}
	}
	if optOut == !builtIn {
		return nil, false // opted out of a re-exec, or nothing to change
	}
	for _, s := range strings.Split(godebug, ",") {
		if strings.HasPrefix(strings.TrimSpace(s), "schedtrace=") {
			return nil, false
		}
	}
	setting := sysmonSetting
	if builtIn {
		setting = "schedtrace=0"
	}
	if godebug != "" {
		godebug += ","
	}
	env = append([]string(nil), environ...)
	if at >= 0 {
		env[at] = "GODEBUG=" + godebug + setting
	} else {
		env = append(env, "GODEBUG="+setting)
	}
	return env, true
}

// tuneSysmon re-executes meshd with sysmonSetting in GODEBUG (the runtime
// reads it only at start). It returns only when no re-exec is needed or it
// failed; meshd then runs with the runtime's default.
func tuneSysmon() {
	env, ok := sysmonEnv(os.Environ(), sysmonBuiltIn())
	if !ok {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	_ = syscall.Exec(exe, os.Args, env)
}
