// Package watch is meshd's one file watcher for configuration: it follows
// files and folders (fsnotify on their folders) and calls back once the
// changes have been quiet for a debounce, so an editor's several writes or a
// rename-over are read once.
//
// It understands the way a Kubernetes volume (ConfigMap, Secret) updates:
// the file the sidecar was given is a symlink through "..data" into a
// timestamped folder, and an update swaps the "..data" symlink atomically,
// so no event ever names the file itself. Any event on a "..name" entry of
// a watched folder counts as a change of every file in it.
//
//	w, err := watch.New(watch.Options{Debounce: 100 * time.Millisecond, Logger: log})
//	if err != nil { ... }
//	if err := w.File(path); err != nil { ... }
//	go w.Run(ctx, func() { reload(path) }) // until ctx is done; closes w
//
// Static discovery, policy and the Dapr Configuration it reads, and the
// resiliency file all use it.
package watch
