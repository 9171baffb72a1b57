//go:build !linux

package main

import (
	"os/exec"
	"syscall"
)

// isolate puts the child in its own process group, so it can be stopped as
// a group and a terminal Ctrl-C reaches only the demo.
func isolate(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}
