package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// The local mesh of `meshctl init`: one sentry for this user, started in
// the background, its data and state under home():
//
//	local.json   the sentry's addresses and PID (state, this file's type local)
//	sentry/      sentry's --data-dir (CA, join key, bundle.pem)
//	sentry.log   its log
//	run/         one record per `meshctl run` in progress (list, status)
const (
	envHome   = "MESHD_HOME"    // overrides os.UserConfigDir()/meshd
	envBinDir = "MESHD_BIN_DIR" // where meshd and sentry are (default: beside meshctl, then PATH)
)

// local is local.json.
type local struct {
	SentryAddress string    `json:"sentryAddress"`
	HealthAddress string    `json:"healthAddress"`
	PID           int       `json:"pid"`
	Started       time.Time `json:"started"`
}

func addLocalCommands(root *cobra.Command) {
	root.AddCommand(newInitCommand(), newUninstallCommand(), newRunCommand(), newListCommand(), newStatusCommand(), newDashboardCommand())
}

// home is the folder of the local mesh.
func home() (string, error) {
	if h := os.Getenv(envHome); h != "" {
		return h, nil
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no folder for the local mesh (%w); set %s", err, envHome)
	}
	return filepath.Join(d, "meshd"), nil
}

// binary finds the program name (meshd, sentry): $MESHD_BIN_DIR, the folder
// of meshctl itself, then PATH.
func binary(name string) (string, error) {
	var dirs []string
	if d := os.Getenv(envBinDir); d != "" {
		dirs = append(dirs, d)
	}
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(exe))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found beside meshctl, in $%s or on PATH: build it (make build puts it in bin/ beside meshctl)", name, envBinDir)
}

func readLocal(h string) (*local, error) {
	b, err := os.ReadFile(filepath.Join(h, "local.json"))
	if err != nil {
		return nil, err
	}
	var l local
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(h, "local.json"), err)
	}
	return &l, nil
}

// running reports whether l's sentry is alive and is the one of h (a PID
// reused by another program does not count).
func (l *local) running(h string) bool {
	if l == nil || l.PID <= 0 || !alive(l.PID) {
		return false
	}
	if cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(l.PID) + "/cmdline"); err == nil {
		return strings.Contains(string(cmdline), filepath.Join(h, "sentry"))
	}
	return true
}

// alive reports whether process pid exists and is not a zombie (one whose
// parent has not reaped it yet has ended all the same).
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
			return false
		}
	}
	return true
}

func healthy(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health %d", resp.StatusCode)
	}
	return nil
}

// freeAddr is a loopback address with a port nothing listens on now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// usable keeps addr if its port can be bound now, else picks a free one.
func usable(addr string) (string, error) {
	if addr != "" {
		if l, err := net.Listen("tcp", addr); err == nil {
			l.Close()
			return addr, nil
		}
	}
	return freeAddr()
}

func newInitCommand() *cobra.Command {
	var wait time.Duration
	c := &cobra.Command{
		Use:   "init",
		Short: "start a local sentry (the mesh's CA) for this user, in the background",
		Long: "init starts sentry as a background process of this user: no root, no container. Its data\n" +
			"(CA keys, join key, trust bundle) and log live in $" + envHome + " (default: the user's config\n" +
			"folder, e.g. ~/.config/meshd). It listens on 127.0.0.1 only. init is idempotent: with sentry\n" +
			"already running it says so and does nothing; after a reboot it starts it again with the same\n" +
			"CA. `meshctl run` mints join tokens from it; `meshctl uninstall` stops it and removes the data.",
		Example: "  meshctl init\n  meshctl run --app-id orders --app-port 3000 -- ./orders",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			h, err := home()
			if err != nil {
				return err
			}
			prev, err := readLocal(h)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			if prev.running(h) {
				if err := healthy(cmd.Context(), prev.HealthAddress); err == nil {
					fmt.Fprintf(out, "sentry already running (pid %d, gRPC %s); data in %s\n", prev.PID, prev.SentryAddress, h)
					return nil
				}
				return fmt.Errorf("sentry (pid %d) runs but is not healthy at %s: see %s, or `meshctl uninstall` and init again",
					prev.PID, prev.HealthAddress, filepath.Join(h, "sentry.log"))
			}
			bin, err := binary("sentry")
			if err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Join(h, "run"), 0o700); err != nil {
				return err
			}
			l := local{}
			if prev != nil {
				l = *prev
			}
			if l.SentryAddress, err = usable(l.SentryAddress); err != nil {
				return err
			}
			if l.HealthAddress, err = usable(l.HealthAddress); err != nil {
				return err
			}
			logPath := filepath.Join(h, "sentry.log")
			logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
			if err != nil {
				return err
			}
			defer logf.Close()
			sc := exec.Command(bin, "--data-dir", filepath.Join(h, "sentry"), "--listen", l.SentryAddress, "--health-listen", l.HealthAddress)
			sc.Stdout, sc.Stderr = logf, logf
			sc.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlives meshctl and its terminal
			if err := sc.Start(); err != nil {
				return fmt.Errorf("start sentry: %w", err)
			}
			exited := make(chan error, 1)
			go func() { exited <- sc.Wait() }()
			l.PID, l.Started = sc.Process.Pid, time.Now().UTC()
			fmt.Fprintf(out, "starting sentry (pid %d, gRPC %s) ", l.PID, l.SentryAddress)
			if err := waitReady(cmd.Context(), out, wait, exited, func(ctx context.Context) error { return healthy(ctx, l.HealthAddress) }); err != nil {
				_ = sc.Process.Kill()
				return fmt.Errorf("sentry did not become ready: %w\n%s", err, tail(logPath, 15))
			}
			b, _ := json.MarshalIndent(l, "", "  ")
			if err := os.WriteFile(filepath.Join(h, "local.json"), append(b, '\n'), 0o600); err != nil {
				_ = sc.Process.Kill()
				return err
			}
			fmt.Fprintf(out, "sentry ready; data in %s, log %s\nnext: meshctl run --app-id APP [--app-port PORT] -- COMMAND ARGS...\n", h, logPath)
			return nil
		},
	}
	c.Flags().DurationVar(&wait, "wait", 30*time.Second, "how long to wait for sentry to become ready")
	return c
}

// waitReady polls ready every 200ms until it passes, the process exits
// (exited, whose value it puts back), or wait ends, printing a dot per
// second as progress.
func waitReady(ctx context.Context, out io.Writer, wait time.Duration, exited chan error, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last error
	for n := 0; ; n++ {
		if last = ready(ctx); last == nil {
			fmt.Fprintln(out, "✓")
			return nil
		}
		if n%5 == 4 {
			fmt.Fprint(out, ".")
		}
		select {
		case err := <-exited:
			exited <- err
			fmt.Fprintln(out, "✗")
			if err == nil {
				err = errors.New("exit status 0")
			}
			return fmt.Errorf("it exited (%w)", err)
		case <-ctx.Done():
			fmt.Fprintln(out, "✗")
			return fmt.Errorf("not ready after %s (last check: %w)", wait, last)
		case <-tick.C:
		}
	}
}

// tail is the last n lines of the file at path, for an error message.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "last lines of " + path + ":\n  " + strings.Join(lines, "\n  ")
}

func newUninstallCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "uninstall",
		Short: "stop the local sentry of `meshctl init` and remove its data (CA keys, tokens, logs)",
		Long: "uninstall stops the sentry `meshctl init` started and removes $" + envHome + " (default: the\n" +
			"user's config folder's meshd/) with the CA: certificates it issued stop verifying. Sidecars of\n" +
			"`meshctl run` still running lose their CA; stop them first. Idempotent.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			h, err := home()
			if err != nil {
				return err
			}
			l, err := readLocal(h)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			if l.running(h) {
				fmt.Fprintf(out, "stopping sentry (pid %d) ", l.PID)
				if err := stopPID(l.PID, 10*time.Second); err != nil {
					return err
				}
				fmt.Fprintln(out, "✓")
			}
			if _, err := os.Stat(h); errors.Is(err, os.ErrNotExist) {
				fmt.Fprintf(out, "nothing to uninstall (%s does not exist)\n", h)
				return nil
			}
			if err := os.RemoveAll(h); err != nil {
				return err
			}
			fmt.Fprintf(out, "removed %s\n", h)
			return nil
		},
	}
}

// stopPID sends SIGTERM, waits up to grace, then SIGKILL.
func stopPID(pid int, grace time.Duration) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop pid %d: %w", pid, err)
	}
	deadline := time.Now().Add(grace)
	for alive(pid) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if alive(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return nil
}
