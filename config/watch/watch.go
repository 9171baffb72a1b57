package watch

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultDebounce is Options.Debounce's default.
const DefaultDebounce = 100 * time.Millisecond

// Options configure a Watcher.
type Options struct {
	// Debounce is the quiet time after the last change before the callback
	// runs (default DefaultDebounce).
	Debounce time.Duration
	// Logger receives watch errors; nil means slog.Default().
	Logger *slog.Logger
	// Prefix names the watcher in its logs ("resiliency").
	Prefix string
	// OnError, if set, receives watch errors instead of the log.
	OnError func(error)
}

// Watcher follows files and folders; see the package doc. Add files and
// folders, then Run it.
type Watcher struct {
	fs   *fsnotify.Watcher
	opts Options
	log  *slog.Logger

	mu    sync.Mutex
	files map[string]bool              // absolute paths of watched files
	trees map[string]func(string) bool // absolute tree roots: their skip filter
}

// New starts an fsnotify watcher. Run closes it, or Close if Run never runs.
func New(opts Options) (*Watcher, error) {
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.Prefix == "" {
		opts.Prefix = "watch"
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	fs, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	return &Watcher{fs: fs, opts: opts, log: log, files: map[string]bool{}, trees: map[string]func(string) bool{}}, nil
}

// File watches one file: writes to it, a file renamed over it, and a
// ConfigMap "..data" swap in its folder.
func (w *Watcher) File(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	if err := w.fs.Add(filepath.Dir(abs)); err != nil {
		return fmt.Errorf("watch %s: %w", filepath.Dir(abs), err)
	}
	w.mu.Lock()
	w.files[abs] = true
	w.mu.Unlock()
	return nil
}

// Tree watches the files of dir and of its direct subfolders, including
// subfolders that appear later. skip, if not nil, names entries to ignore
// by their base name (editors' temporary files); "..name" entries are never
// skipped. A folder that cannot be watched is logged and left out.
func (w *Watcher) Tree(dir string, skip func(base string) bool) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	if skip == nil {
		skip = func(string) bool { return false }
	}
	w.add(abs)
	entries, err := os.ReadDir(abs)
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	for _, en := range entries {
		full := filepath.Join(abs, en.Name())
		if st, err := os.Stat(full); err == nil && st.IsDir() && !strings.HasPrefix(en.Name(), "..") {
			w.add(full)
		}
	}
	w.mu.Lock()
	w.trees[abs] = skip
	w.mu.Unlock()
	return nil
}

func (w *Watcher) add(dir string) {
	if err := w.fs.Add(dir); err != nil {
		w.log.Warn(w.opts.Prefix+": cannot watch folder", "dir", dir, "err", err)
	}
}

// Close stops the watcher. Run calls it when it returns.
func (w *Watcher) Close() error { return w.fs.Close() }

// Run calls changed after every burst of relevant changes, once they have
// been quiet for the debounce, until ctx is done; then it closes the
// watcher and returns nil. A watch error is logged (or given to
// Options.OnError) and treated as a change (an event may have been lost).
// changed runs on Run's goroutine.
func (w *Watcher) Run(ctx context.Context, changed func()) error {
	defer w.fs.Close()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.fs.Events:
			if !ok {
				return nil
			}
			if w.relevant(ev) {
				timer.Reset(w.opts.Debounce)
			}
		case err, ok := <-w.fs.Errors:
			if !ok {
				return nil
			}
			if w.opts.OnError != nil {
				w.opts.OnError(err)
			} else {
				w.log.Warn(w.opts.Prefix+": watch error", "err", err)
			}
			timer.Reset(w.opts.Debounce) // events may have been lost (queue overflow): read again
		case <-timer.C:
			changed()
		}
	}
}

// relevant reports whether ev may have changed a watched file, and starts
// watching a subfolder created at the top of a tree.
func (w *Watcher) relevant(ev fsnotify.Event) bool {
	name := filepath.Clean(ev.Name)
	base, dir := filepath.Base(name), filepath.Dir(name)
	kube := strings.HasPrefix(base, "..") // a volume's ..data swap, or its timestamped folders
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.files[name] {
		return true
	}
	if kube {
		for f := range w.files {
			if filepath.Dir(f) == dir {
				return true
			}
		}
	}
	for root, skip := range w.trees {
		rel, err := filepath.Rel(root, name)
		if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			continue // not in this tree
		}
		if kube {
			return true
		}
		if skip(base) {
			return false
		}
		if ev.Has(fsnotify.Create) && dir == root {
			if st, err := os.Stat(name); err == nil && st.IsDir() {
				w.add(name)
			}
		}
		return true
	}
	return false
}
