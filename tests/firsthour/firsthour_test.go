package firsthour

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
)

// testVersion is stamped into the meshctl built here with -ldflags.
const testVersion = "v9.8.7-firsthour"

var (
	buildOnce sync.Once
	built     harness.Binaries
	meshctlIn string
	buildErr  error
	binDir    string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// bins builds meshd, sentry and meshctl (with the version stamped as make
// build does) once, into a folder of this test process's own, removed at
// its end.
func bins(t *testing.T) (b harness.Binaries, meshctl string) {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "meshd-firsthour-bin-"); buildErr != nil {
			return
		}
		for _, pkg := range []struct {
			out     *string
			path    string
			ldflags string
		}{
			{&built.Meshd, "./cmd/meshd", ""},
			{&built.Sentry, "./cmd/sentry", ""},
			{&meshctlIn, "./cmd/meshctl", "-X github.com/meshd/meshd/internal/version.Version=" + testVersion},
		} {
			out := filepath.Join(binDir, filepath.Base(pkg.path))
			cmd := exec.Command("go", "build", "-ldflags", pkg.ldflags, "-o", out, pkg.path)
			cmd.Dir = harness.RepoRoot()
			if msg, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %w\n%s", pkg.path, err, msg)
				return
			}
			*pkg.out = out
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built, meshctlIn
}

// runBin runs bin with args and returns its exit code, stdout and stderr.
func runBin(t *testing.T, bin string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %q: %v", bin, args, err)
	}
	return code, stdout.String(), stderr.String()
}

func TestVersion(t *testing.T) {
	b, meshctl := bins(t)
	line := regexp.MustCompile(`^(meshd|sentry|meshctl) (\S+) \(go1\.[0-9.]+\S*, [a-z0-9]+/[a-z0-9]+\)\n$`)
	for _, bin := range []string{b.Meshd, b.Sentry, meshctl} {
		for _, args := range [][]string{{"--version"}, {"version"}} {
			code, out, errOut := runBin(t, bin, args...)
			m := line.FindStringSubmatch(out)
			if code != 0 || m == nil || m[1] != filepath.Base(bin) || errOut != "" {
				t.Errorf("%s %s: exit %d, stdout %q, stderr %q", filepath.Base(bin), args[0], code, out, errOut)
				continue
			}
			if filepath.Base(bin) == "meshctl" && m[2] != testVersion {
				t.Errorf("meshctl built with -X ...version.Version=%s says %q", testVersion, m[2])
			}
		}
	}
}

// commands lists the subcommand paths of a cobra program from its help.
func commands(t *testing.T, bin string, path []string) [][]string {
	_, out, _ := runBin(t, bin, append(path, "--help")...)
	all := [][]string{path}
	sec := strings.Index(out, "Available Commands:\n")
	if sec < 0 {
		return all
	}
	for line := range strings.SplitSeq(out[sec+len("Available Commands:\n"):], "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			break
		}
		if f[0] == "help" {
			continue
		}
		all = append(all, commands(t, bin, append(append([]string{}, path...), f[0]))...)
	}
	return all
}

func TestHelpShowsBooleansPlainly(t *testing.T) {
	b, meshctl := bins(t)
	for _, bin := range []string{b.Meshd, b.Sentry, meshctl} {
		cmds := commands(t, bin, nil)
		if len(cmds) < 3 {
			t.Errorf("%s: found only %v", bin, cmds)
		}
		for _, c := range cmds {
			code, out, _ := runBin(t, bin, append(c, "--help")...)
			if code != 0 || !strings.Contains(out, "-h, --help ") {
				t.Errorf("%s %v --help: exit %d\n%s", filepath.Base(bin), c, code, out)
			}
			if strings.Contains(out, "[=true|false]") {
				t.Errorf("%s %v --help shows a boolean as [=true|false]:\n%s", filepath.Base(bin), c, out)
			}
		}
	}
	_, out, _ := runBin(t, b.Meshd, "--help")
	if !regexp.MustCompile(`(?m)^      --insecure +turn mTLS between sidecars off`).MatchString(out) {
		t.Errorf("meshd --help: --insecure not shown plainly:\n%s", out)
	}
	// Plain in help, still a boolean on the command line.
	code, _, errOut := runBin(t, b.Meshd, "--insecure=maybe", "--app-id", "x")
	if code != 1 || !strings.Contains(errOut, `invalid argument "maybe" for "--insecure" flag`) {
		t.Errorf("meshd --insecure=maybe: exit %d, %q", code, errOut)
	}
}

// TestFatalErrorOnce: a fatal error is one line on stderr, "PROGRAM: ...",
// with no repeated prefix, no usage dump and no log line besides.
func TestFatalErrorOnce(t *testing.T) {
	b, meshctl := bins(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		bin  string
		args []string
		want string
	}{
		{b.Meshd, []string{"--app-id", "x", "--policy-default", "maybe"}, "meshd: --policy-default: "},
		{b.Meshd, []string{}, `meshd: required flag(s) "app-id" not set`},
		{b.Meshd, []string{"--app-id", "x", "--log-level", "loud"}, "meshd: "},
		{b.Sentry, []string{"--data-dir", filepath.Join(dir, "s1"), "--trust-domain", "Not A Domain!"}, "sentry: --trust-domain "},
		{b.Sentry, []string{"--data-dir", filepath.Join(dir, "s2"), "--token-validator", "nope"}, `sentry: token validator "nope"`},
		{b.Sentry, []string{"token", "create", "--data-dir", filepath.Join(dir, "s3")}, `sentry: required flag(s) "app-id" not set`},
		{meshctl, []string{"policy", "explain", "--to", "x", "--from", "http://no"}, "meshctl: --policy-dir or --config is required"},
		{meshctl, []string{"nosuch"}, `meshctl: unknown command "nosuch" for "meshctl"`},
	} {
		code, out, errOut := runBin(t, tc.bin, tc.args...)
		name := filepath.Base(tc.bin) + " " + strings.Join(tc.args, " ")
		lines := strings.Split(strings.TrimRight(errOut, "\n"), "\n")
		prog := filepath.Base(tc.bin)
		switch {
		case code != 1:
			t.Errorf("%s: exit %d, want 1", name, code)
		case out != "":
			t.Errorf("%s: stdout %q, want nothing", name, out)
		case len(lines) != 1:
			t.Errorf("%s: %d lines on stderr, want 1:\n%s", name, len(lines), errOut)
		case !strings.HasPrefix(lines[0], tc.want):
			t.Errorf("%s: stderr %q, want it to start with %q", name, lines[0], tc.want)
		case strings.Contains(lines[0], prog+": "+prog+":") || strings.Contains(lines[0], "Error:"):
			t.Errorf("%s: prefix repeated or mixed: %q", name, lines[0])
		}
	}
}

func TestTokenCreateRefusesUnknownDataDir(t *testing.T) {
	b, _ := bins(t)
	typo := filepath.Join(t.TempDir(), "sentyr")
	code, out, errOut := runBin(t, b.Sentry, "token", "create", "--data-dir", typo, "--app-id", "orders")
	if code != 1 || out != "" || !strings.Contains(errOut, "sentry: token: "+typo+" has no join key") ||
		!strings.Contains(errOut, "a sentry that has started") {
		t.Errorf("token create --data-dir TYPO: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if _, err := os.Stat(typo); !os.IsNotExist(err) {
		t.Errorf("token create made %s (stat: %v)", typo, err)
	}
	// An existing but empty dir is no better.
	empty := t.TempDir()
	if code, out, _ := runBin(t, b.Sentry, "token", "create", "--data-dir", empty, "--app-id", "orders"); code != 1 || out != "" {
		t.Errorf("token create on an empty dir: exit %d, token %q", code, out)
	}
	if ents, _ := os.ReadDir(empty); len(ents) != 0 {
		t.Errorf("token create wrote into an empty dir: %v", ents)
	}
	// After sentry ran there once, the same command works.
	s := harness.StartSentry(t, b, "")
	if tok, _ := s.Token(t, "orders", "default"); tok == "" {
		t.Error("no token from a sentry's data dir")
	}
}

func TestSentryDataDirLock(t *testing.T) {
	b, _ := bins(t)
	s := harness.StartSentry(t, b, "")
	second := harness.Start(t, "sentry-2", b.Sentry, "--data-dir", s.DataDir,
		"--listen", "127.0.0.1:"+strconv.Itoa(harness.FreePort(t)), "--health-listen", "127.0.0.1:"+strconv.Itoa(harness.FreePort(t)))
	if err := second.Wait(15 * time.Second); err == nil {
		t.Fatal("a second sentry on the same data dir exited 0")
	}
	want := "sentry: data dir " + s.DataDir + " is in use by another sentry (pid " + strconv.Itoa(s.Pid()) + "): stop it first"
	if log := second.Log(); !strings.HasPrefix(log, want) || strings.Count(log, "\n") != 1 {
		t.Errorf("second sentry said %q, want one line starting %q", log, want)
	}
	if s.Exited() {
		t.Fatal("the first sentry stopped")
	}
	// Once the first one is gone, the dir is free again (the lock goes with
	// the process, however it ends).
	s.Kill()
	third := harness.StartSentry(t, b, s.DataDir)
	if third.Exited() {
		t.Fatal("sentry could not take a dir whose sentry was killed")
	}
}

func TestSentryAddressWithoutPort(t *testing.T) {
	b, _ := bins(t)
	s := harness.StartSentry(t, b, "")
	sc := harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "orders", NoWait: true,
		Extra: []string{"--sentry-address", "127.0.0.1"}})
	if err := sc.Wait(15 * time.Second); err == nil {
		t.Fatal("meshd --sentry-address 127.0.0.1 exited 0")
	}
	want := `--sentry-address "127.0.0.1": want host:port`
	if !strings.Contains(sc.Log(), want) || strings.Contains(sc.Log(), ":443") {
		t.Errorf("meshd --sentry-address without port said:\n%s\nwant %q", sc.Log(), want)
	}
}

// notReadyReason polls the sidecar's health until its 503 answer's message
// contains want.
func notReadyReason(t *testing.T, url, want string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var e struct{ ErrorCode, Message string }
			_ = json.Unmarshal(body, &e)
			last = strconv.Itoa(resp.StatusCode) + " " + e.ErrorCode + " " + e.Message
			if resp.StatusCode == http.StatusServiceUnavailable && e.ErrorCode == "ERR_NOT_READY" && strings.Contains(e.Message, want) {
				return e.Message
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("health never said %q; last answer: %s", want, last)
	return ""
}

// TestUnhealableSaidOnce: errors that retrying cannot fix are logged once at
// ERROR with what to do, and health answers not-ready with the reason,
// while the sidecar keeps trying (a fixed token file heals it).
func TestUnhealableSaidOnce(t *testing.T) {
	b, _ := bins(t)
	s := harness.StartSentry(t, b, "")
	other := harness.StartSentry(t, b, "")

	t.Run("wrong trust anchors", func(t *testing.T) {
		sc := harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "orders", NoWait: true,
			Extra: []string{"--trust-anchors-file", other.BundleFile()}})
		msg := notReadyReason(t, sc.HTTPURL()+"/v1.0/healthz", "do not verify")
		if !strings.Contains(msg, other.BundleFile()) || !strings.Contains(msg, "bundle.pem") {
			t.Errorf("reason does not name the file and the fix: %s", msg)
		}
		time.Sleep(3 * time.Second) // several more attempts
		if n := strings.Count(sc.Log(), "CANNOT GET AN IDENTITY"); n != 1 || !strings.Contains(sc.Log(), "level=ERROR") {
			t.Errorf("said %d times at ERROR, want once:\n%s", n, sc.Log())
		}
		if sc.Exited() {
			t.Error("meshd exited; it should keep trying")
		}
	})

	t.Run("token for another app, then fixed", func(t *testing.T) {
		tokFile := s.TokenFile(t, "billing", "default")
		sc := harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "orders", NoWait: true, TokenFile: tokFile})
		msg := notReadyReason(t, sc.HTTPURL()+"/v1.0/healthz", "refused this sidecar's join token")
		for _, w := range []string{"app orders in namespace default", "sentry token create", "--app-id orders", tokFile} {
			if !strings.Contains(msg, w) {
				t.Errorf("reason lacks %q: %s", w, msg)
			}
		}
		time.Sleep(2 * time.Second)
		if n := strings.Count(sc.Log(), "CANNOT GET AN IDENTITY"); n != 1 {
			t.Errorf("said %d times, want once:\n%s", n, sc.Log())
		}
		tok, _ := s.Token(t, "orders", "default")
		harness.WriteToken(t, tokFile, tok)
		harness.WaitHTTP(t, sc.HTTPURL()+"/v1.0/healthz", http.StatusNoContent, 60*time.Second)
	})
}
