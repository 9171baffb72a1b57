//go:build !unix

package join

import "sync"

var lockMu sync.Mutex

// lockFile serializes updates within this process only: on systems without
// flock, concurrent updates from several processes are not coordinated.
func lockFile(string) (func(), error) {
	lockMu.Lock()
	return lockMu.Unlock, nil
}
