package policy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watch reloads the policy set whenever a file under the policy directory
// (or the config file) changes, after Debounce of quiet. It blocks until
// ctx is done. New namespace folders are watched as they appear.
func (e *Engine) Watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("policy: watch: %w", err)
	}
	defer w.Close()
	add := func(dir string) {
		if err := w.Add(dir); err != nil {
			e.log.Warn("policy: cannot watch folder", "dir", dir, "err", err)
		}
	}
	if e.opts.Dir != "" {
		add(e.opts.Dir)
		entries, err := os.ReadDir(e.opts.Dir)
		if err != nil {
			return fmt.Errorf("policy: watch: %w", err)
		}
		for _, en := range entries {
			full := filepath.Join(e.opts.Dir, en.Name())
			if st, err := os.Stat(full); err == nil && st.IsDir() && !strings.HasPrefix(en.Name(), "..") {
				add(full)
			}
		}
	}
	if e.opts.ConfigFile != "" {
		add(filepath.Dir(e.opts.ConfigFile)) // editors replace files by rename
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if !e.relevant(ev.Name) {
				continue
			}
			if ev.Has(fsnotify.Create) {
				if st, err := os.Stat(ev.Name); err == nil && st.IsDir() && filepath.Dir(ev.Name) == filepath.Clean(e.opts.Dir) {
					add(ev.Name)
				}
			}
			timer.Reset(e.opts.Debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			e.log.Warn("policy: watch error", "err", err)
			timer.Reset(e.opts.Debounce)
		case <-timer.C:
			_ = e.Reload(ctx) // logged and counted by Reload
		}
	}
}

// relevant filters events: files of the policy tree (and the config file),
// including Kubernetes ConfigMap "..data" swaps.
func (e *Engine) relevant(name string) bool {
	if e.opts.ConfigFile != "" && filepath.Clean(name) == filepath.Clean(e.opts.ConfigFile) {
		return true
	}
	if e.opts.Dir == "" {
		return false
	}
	rel, err := filepath.Rel(e.opts.Dir, name)
	if err != nil || strings.HasPrefix(rel, "..") && !strings.HasPrefix(rel, "..data") {
		return false
	}
	base := filepath.Base(name)
	if strings.HasPrefix(base, "..") {
		return true
	}
	if strings.HasPrefix(base, ".") || strings.HasSuffix(base, "~") || strings.HasSuffix(base, ".swp") {
		return false
	}
	return true
}
