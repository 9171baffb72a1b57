//go:build unix

package sentry

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// LockFile is the file in the data dir a running sentry holds locked.
const LockFile = "sentry.lock"

// LockDataDir takes the data dir for this process: two sentries on one
// data dir would each rotate and sign with keys the other overwrites. It
// creates the dir (0700) if needed and returns the release function. A
// second sentry gets an error naming the holder's PID. The lock is an
// flock: it goes with the process, however it ends.
func LockDataDir(dataDir string) (release func(), err error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("sentry: data dir: %w", err)
	}
	path := filepath.Join(dataDir, LockFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sentry: data dir lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another process"
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
				holder = "another sentry (pid " + strconv.Itoa(pid) + ")"
			}
			return nil, fmt.Errorf("sentry: data dir %s is in use by %s: stop it first, or give this one its own --data-dir", dataDir, holder)
		}
		return nil, fmt.Errorf("sentry: data dir lock: %w", err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil
}
