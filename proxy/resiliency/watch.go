package resiliency

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/meshd/meshd/config/watch"
)

// Load reads a Resiliency file and prepares it for appID: nil (no policy)
// when the documents' scopes leave appID out.
func Load(path, appID string, log *slog.Logger) (*Config, error) {
	s, err := LoadFile(path)
	if err != nil {
		return nil, err
	}
	c := New(s)
	if !c.AppliesTo(appID) {
		if log != nil {
			log.Info("resiliency: scopes exclude this app; no policy applies", "file", path, "app", appID, "scopes", s.Scopes)
		}
		return nil, nil
	}
	if log != nil {
		log.Info("resiliency: loaded", "file", path, "timeouts", len(s.Timeouts), "retries", len(s.Retries),
			"circuitBreakers", len(s.CircuitBreakers), "apps", len(s.Apps))
	}
	return c, nil
}

// Watch reloads path on every change (writes, atomic renames, and the
// "..data" symlink swap of a Kubernetes ConfigMap mount) until ctx is done,
// calling apply with each good Config (nil: scoped out). A bad file is
// logged with its file:line and the last good Config stays. Breakers and
// budgets start afresh with a new Config.
func Watch(ctx context.Context, path, appID string, log *slog.Logger, apply func(*Config)) error {
	if log == nil {
		log = slog.Default()
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("resiliency: watch: %w", err)
	}
	w, err := watch.New(watch.Options{Logger: log, Prefix: "resiliency"})
	if err != nil {
		return fmt.Errorf("resiliency: %w", err)
	}
	if err := w.File(abs); err != nil {
		w.Close()
		return fmt.Errorf("resiliency: %w", err)
	}
	go func() {
		_ = w.Run(ctx, func() {
			c, err := Load(abs, appID, log)
			if err != nil {
				log.Error("resiliency: reload rejected; the last good file stays in force", "err", err)
				return
			}
			apply(c)
		})
	}()
	return nil
}
