package policy

import (
	"context"
	"fmt"
	"strings"

	"github.com/meshd/meshd/config/watch"
)

// Watch reloads the policy set whenever a file under the policy directory
// (or the config file) changes, after Debounce of quiet: writes, editors'
// renames, and Kubernetes ConfigMap "..data" swaps. It blocks until ctx is
// done. New namespace folders are watched as they appear.
func (e *Engine) Watch(ctx context.Context) error {
	w, err := watch.New(watch.Options{Debounce: e.opts.Debounce, Logger: e.log, Prefix: "policy"})
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	if e.opts.Dir != "" {
		if err := w.Tree(e.opts.Dir, editorFile); err != nil {
			w.Close()
			return fmt.Errorf("policy: %w", err)
		}
	}
	if e.opts.ConfigFile != "" {
		if err := w.File(e.opts.ConfigFile); err != nil {
			e.log.Warn("policy: cannot watch folder", "file", e.opts.ConfigFile, "err", err)
		}
	}
	return w.Run(ctx, func() {
		_ = e.Reload(ctx) // logged and counted by Reload
	})
}

// editorFile reports whether a file of the policy tree is an editor's
// temporary or backup file, not policy.
func editorFile(base string) bool {
	return strings.HasPrefix(base, ".") || strings.HasSuffix(base, "~") || strings.HasSuffix(base, ".swp")
}
