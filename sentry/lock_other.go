//go:build !unix

package sentry

import (
	"fmt"
	"os"
)

// LockFile is the file in the data dir a running sentry holds locked.
const LockFile = "sentry.lock"

// LockDataDir creates the data dir; where flock is not available it takes
// no lock.
func LockDataDir(dataDir string) (release func(), err error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("sentry: data dir: %w", err)
	}
	return func() {}, nil
}
