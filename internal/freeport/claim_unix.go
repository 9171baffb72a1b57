//go:build unix

package freeport

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// claimDir holds one lock file per port handed out by any process on the
// machine (tests of several packages, or of several checkouts, run side by
// side).
var claimDir = filepath.Join(os.TempDir(), "meshd-freeport")

// held keeps the claimed lock files open: a lock lasts as long as the
// process that took the port.
var held []*os.File

// claim takes the machine-wide claim on port p for the life of this
// process; it reports false when another live process holds it. Where the
// claim cannot be checked at all (no writable temp dir) it reports true:
// the in-process bookkeeping and the bind check still apply.
func claim(p int) bool {
	if err := os.MkdirAll(claimDir, 0o777); err != nil {
		return true
	}
	f, err := os.OpenFile(filepath.Join(claimDir, strconv.Itoa(p)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return true
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return false
	}
	held = append(held, f)
	return true
}
