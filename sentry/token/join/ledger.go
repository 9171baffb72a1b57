package join

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry/token"
)

// Files of the ledger inside sentry's data directory.
const (
	// RevokedFile lists revoked token IDs (written by `sentry token revoke`,
	// read by the running sentry whenever it changes).
	RevokedFile = "join-revoked.json"
	// UsedFile lists the IDs of single-use tokens that have been spent.
	UsedFile = "join-used.json"
	// MaxLedgerEntries bounds each list. Entries leave a list when their
	// token expires (an expired token is refused anyway), so only tokens
	// that are still live count; past the bound, revoking or spending fails
	// (closed).
	MaxLedgerEntries = 100_000
)

// ledgerFile is the on-disk form of a list: token ID -> its expiry (Unix
// seconds), after which the entry is dropped.
type ledgerFile struct {
	IDs map[string]int64 `json:"jtis"`
}

// Ledger is the persistent state of join tokens in a data directory: which
// are revoked and which single-use ones are spent. It is safe for concurrent
// use, and several processes may share the directory (updates take a lock
// file and replace the list atomically).
type Ledger struct {
	dir string

	mu      sync.Mutex
	revoked map[string]int64
	stamp   os.FileInfo // of the revoked file when last read; nil: absent
}

// OpenLedger opens the ledger in dataDir and reads the revocation list.
func OpenLedger(dataDir string) (*Ledger, error) {
	l := &Ledger{dir: dataDir}
	if _, err := l.Revoked(""); err != nil {
		return nil, err
	}
	return l, nil
}

// Revoked reports whether the token with ID jti is revoked. The revocation
// file is re-read if it changed since the last call (a stat per call), so a
// revocation made by the CLI while sentry runs takes effect at once.
func (l *Ledger) Revoked(jti string) (bool, error) {
	path := filepath.Join(l.dir, RevokedFile)
	l.mu.Lock()
	defer l.mu.Unlock()
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		l.revoked, l.stamp = nil, nil
	case err != nil:
		return false, fmt.Errorf("join: revocation list: %w", err)
	case !sameStamp(l.stamp, fi):
		ids, err := readList(path)
		if err != nil {
			return false, err
		}
		l.revoked, l.stamp = ids, fi
	}
	_, ok := l.revoked[jti]
	return ok, nil
}

func sameStamp(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}

// Spend records the single-use token c as used, durably, before it is
// honoured. A token already spent is refused (token.ErrInvalid).
func (l *Ledger) Spend(c Claims, now time.Time) error {
	err := update(l.dir, UsedFile, now, func(ids map[string]int64) error {
		if _, ok := ids[c.ID]; ok {
			return fmt.Errorf("%w: single-use join token %s has already been used", token.ErrInvalid, c.ID)
		}
		ids[c.ID] = c.Expiry
		return nil
	})
	if err != nil && !errors.Is(err, token.ErrInvalid) {
		// Fail closed: a token that cannot be recorded is not honoured.
		return fmt.Errorf("%w: single-use join token %s could not be recorded: %w", token.ErrInvalid, c.ID, err)
	}
	return err
}

// Used reports whether the single-use token with ID jti has been spent.
func (l *Ledger) Used(jti string) (bool, error) {
	ids, err := readList(filepath.Join(l.dir, UsedFile))
	if err != nil {
		return false, err
	}
	_, ok := ids[jti]
	return ok, nil
}

// Revoke adds the token ID jti, which expires at exp, to the revocation list
// in dataDir. Revoking twice is not an error.
func Revoke(dataDir, jti string, exp, now time.Time) error {
	if b, err := hex.DecodeString(jti); err != nil || len(b) != 16 {
		return fmt.Errorf("join: token ID %q is not 32 hex digits", jti)
	}
	if !exp.After(now) {
		return fmt.Errorf("join: token %s already expired at %s; nothing to revoke", jti, exp.UTC().Format(time.RFC3339))
	}
	return update(dataDir, RevokedFile, now, func(ids map[string]int64) error {
		ids[jti] = max(ids[jti], exp.Unix())
		return nil
	})
}

// update applies fn to the list in dataDir/name under a lock, dropping
// entries whose token has expired, and replaces the file atomically.
func update(dataDir, name string, now time.Time, fn func(map[string]int64) error) error {
	path := filepath.Join(dataDir, name)
	unlock, err := lockFile(path + ".lock")
	if err != nil {
		return fmt.Errorf("join: lock %s: %w", name, err)
	}
	defer unlock()
	ids, err := readList(path)
	if err != nil {
		return err
	}
	for id, exp := range ids {
		if exp <= now.Unix() {
			delete(ids, id)
		}
	}
	if err := fn(ids); err != nil {
		return err
	}
	if len(ids) > MaxLedgerEntries {
		return fmt.Errorf("join: %s holds %d live tokens, more than %d", name, len(ids), MaxLedgerEntries)
	}
	b, err := json.Marshal(ledgerFile{IDs: ids})
	if err != nil {
		return fmt.Errorf("join: %s: %w", name, err)
	}
	if err := certs.WriteFileAtomic(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	return nil
}

// readList reads a list; a missing file is an empty list.
func readList(path string) (map[string]int64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]int64{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	var f ledgerFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("join: %s: %w", path, err)
	}
	if f.IDs == nil {
		f.IDs = map[string]int64{}
	}
	return f.IDs, nil
}
