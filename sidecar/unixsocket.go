package sidecar

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// unixSocketName is daprd's name of an app-facing API socket in the
// --unix-domain-socket directory: dapr-{app-id}-{http|grpc}.socket.
func unixSocketName(dir, appID, api string) string {
	return filepath.Join(dir, "dapr-"+appID+"-"+api+".socket")
}

// listenUnix listens on the unix socket path with mode 0600: only the
// sidecar's own user (the app's, as daprd expects) may connect. The socket
// is bound in a private directory (0700) beside path, given its mode there
// and renamed into place, so it is never reachable with looser
// permissions. A socket left at path by a process that ended is replaced; a
// live one is an error. Close removes the socket.
func listenUnix(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("sidecar: --unix-domain-socket: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("sidecar: --unix-domain-socket: %s is not a directory", dir)
	}
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("sidecar: --unix-domain-socket: %s is in use by another process", path)
		}
	}
	tmp, err := os.MkdirTemp(dir, ".meshd-sock-")
	if err != nil {
		return nil, fmt.Errorf("sidecar: --unix-domain-socket: %w", err)
	}
	cleanup := func() { _ = os.RemoveAll(tmp) }
	bound := filepath.Join(tmp, "s")
	l, err := net.Listen("unix", bound)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("sidecar: --unix-domain-socket: %w", err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(bound, 0o600); err != nil {
		_ = l.Close()
		cleanup()
		return nil, fmt.Errorf("sidecar: --unix-domain-socket: %w", err)
	}
	if err := os.Rename(bound, path); err != nil {
		_ = l.Close()
		cleanup()
		return nil, fmt.Errorf("sidecar: --unix-domain-socket: %w", err)
	}
	cleanup()
	return &unixListener{Listener: l, path: path, addr: &net.UnixAddr{Name: path, Net: "unix"}}, nil
}

// unixListener is a unix socket listener that names its final path and
// removes it on Close.
type unixListener struct {
	net.Listener
	path string
	addr *net.UnixAddr
	once sync.Once
}

func (l *unixListener) Addr() net.Addr { return l.addr }

func (l *unixListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() {
		if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
			err = rerr
		}
	})
	return err
}
