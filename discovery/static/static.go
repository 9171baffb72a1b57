package static

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/meshd/meshd/config/watch"
	"github.com/meshd/meshd/discovery"
)

// Name is the --resolver value of this backend.
const Name = "static"

// DefaultDebounce is how long the resolver waits after the last change
// event before it reads the file.
const DefaultDebounce = 100 * time.Millisecond

func init() { discovery.Register(Builder{}) }

// Builder builds static resolvers. The registered one uses the defaults.
type Builder struct {
	// Debounce is the quiet time after the last change event before the file
	// is read again (default DefaultDebounce). Editors write in several
	// steps; the debounce reads the file once they are done.
	Debounce time.Duration
}

var _ discovery.Builder = Builder{}

// Name implements discovery.Builder.
func (Builder) Name() string { return Name }

// Build implements discovery.Builder. It loads opts.ConfigFile (a bad or
// missing file is an error: the sidecar fails closed at start), pushes it
// with ReplaceAll, and watches the file's directory: on every change,
// including an editor's rename-over and a Kubernetes ConfigMap's symlink
// swap, it reads the file again after the debounce. A file that does not
// parse is logged and reported to the Updater, and the last good set stays.
func (b Builder) Build(ctx context.Context, opts discovery.BuildOptions, u discovery.Updater) (discovery.Resolver, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("static: %w", err)
	}
	if opts.ConfigFile == "" {
		return nil, errors.New("static: no --resolver-config file given")
	}
	path, err := filepath.Abs(opts.ConfigFile)
	if err != nil {
		return nil, fmt.Errorf("static: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("resolver", Name, "file", path)
	debounce := b.Debounce
	if debounce <= 0 {
		debounce = DefaultDebounce
	}

	// Watch first, then read, so a change between the two is not missed.
	r := &resolver{path: path, u: u, log: log}
	w, err := watch.New(watch.Options{Debounce: debounce, Logger: log, Prefix: "static", OnError: func(err error) {
		err = fmt.Errorf("static: watch %s: %w", path, err)
		log.Error("static: watch error", "err", err)
		u.ReportError(err)
	}})
	if err != nil {
		return nil, fmt.Errorf("static: %w", err)
	}
	if err := w.File(path); err != nil {
		w.Close()
		return nil, fmt.Errorf("static: %w", err)
	}
	data, err := readFile(path)
	if err == nil {
		var set map[discovery.Target][]discovery.Endpoint
		if set, err = parse(data); err == nil {
			u.ReplaceAll(set)
			log.Info("static: loaded", "apps", len(set))
		} else {
			err = fmt.Errorf("static: %s: %w", path, err)
		}
	}
	if err != nil {
		w.Close()
		return nil, err
	}
	r.lastGood = data
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.stop = cancel
	r.exited = make(chan struct{})
	go func() {
		defer close(r.exited)
		_ = w.Run(ctx, r.reload)
	}()
	return r, nil
}

type resolver struct {
	path string
	u    discovery.Updater
	log  *slog.Logger

	lastGood []byte // contents last pushed
	lastBad  []byte // contents last rejected, so they are reported once

	stop      context.CancelFunc // ends the watch
	exited    chan struct{}
	closeOnce sync.Once
}

func (r *resolver) reload() {
	data, err := readFile(r.path)
	if err != nil {
		r.reject(nil, fmt.Errorf("%w (keeping the last good set)", err))
		return
	}
	if bytes.Equal(data, r.lastGood) {
		r.lastBad = nil
		return
	}
	if r.lastBad != nil && bytes.Equal(data, r.lastBad) {
		return
	}
	set, err := parse(data)
	if err != nil {
		r.reject(data, fmt.Errorf("static: %s: %w (keeping the last good set)", r.path, err))
		return
	}
	r.u.ReplaceAll(set)
	r.lastGood, r.lastBad = data, nil
	r.log.Info("static: reloaded", "apps", len(set))
}

func (r *resolver) reject(data []byte, err error) {
	r.lastBad = data
	r.log.Error("static: file rejected", "err", err)
	r.u.ReportError(err)
}

// Close implements discovery.Resolver. It stops the watch and waits for the
// watching goroutine to end.
func (r *resolver) Close() error {
	r.closeOnce.Do(func() {
		r.stop()
		<-r.exited
	})
	return nil
}
