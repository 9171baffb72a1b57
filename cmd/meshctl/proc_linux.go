package main

import "syscall"

// childAttr puts a child in its own process group (so meshctl can end it
// and whatever it started) and has the kernel kill it if meshctl dies.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
