package dropin_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
)

var (
	npmOnce sync.Once
	npmErr  error
)

// jsDir is the npm package of the JS SDK proof (package.json pins
// @dapr/dapr, package-lock.json every dependency).
func jsDir() string { return filepath.Join(harness.RepoRoot(), "tests", "dropin", "jssdk") }

// installJSSDK runs `npm ci` into jssdk/node_modules (gitignored) unless it
// already holds what package-lock.json names; npm's download cache is kept
// in the repository's .cache/npm. node and npm are required: their absence
// fails the test, it is not skipped.
func installJSSDK(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required by the Dapr JavaScript SDK proof and is not on PATH: install Node.js 20 or later with npm (Debian: apt-get install nodejs npm): %v", tool, err)
		}
	}
	npmOnce.Do(func() {
		dir := jsDir()
		lock, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
		if err != nil {
			npmErr = err
			return
		}
		sum := sha256.Sum256(lock)
		want := hex.EncodeToString(sum[:])
		stamp := filepath.Join(dir, "node_modules", ".meshd-lock-sha256")
		if got, err := os.ReadFile(stamp); err == nil && string(got) == want {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts",
			"--cache", filepath.Join(harness.RepoRoot(), ".cache", "npm"))
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			npmErr = &npmError{err: err, out: string(out)}
			return
		}
		npmErr = os.WriteFile(stamp, []byte(want), 0o644)
	})
	if npmErr != nil {
		t.Fatalf("npm ci in %s: %v", jsDir(), npmErr)
	}
}

type npmError struct {
	err error
	out string
}

func (e *npmError) Error() string { return e.err.Error() + "\n" + e.out }

// step is one step's outcome as proof.js prints it.
type step struct {
	OK    bool            `json:"ok"`
	Value json.RawMessage `json:"value"`
	Error string          `json:"error"`
}

// runProof runs proof.js against a sidecar and returns its steps.
func runProof(t *testing.T, protocol string, httpPort, grpcPort int, token string) map[string]step {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "proof.js")
	cmd.Dir = jsDir()
	env := []string{"DAPR_HOST=127.0.0.1", "DAPR_HTTP_PORT=" + strconv.Itoa(httpPort), "DAPR_GRPC_PORT=" + strconv.Itoa(grpcPort),
		"PROOF_PROTOCOL=" + protocol, "PROOF_TARGET=" + appServer, "PROOF_UNKNOWN=" + appUnknown}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DAPR_") {
			env = append(env, kv)
		}
	}
	if token != "" {
		env = append(env, "DAPR_API_TOKEN="+token)
	}
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node proof.js: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var steps map[string]step
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &steps); err != nil {
		t.Fatalf("proof.js printed %q: %v\nstderr: %s", stdout.String(), err, stderr.String())
	}
	t.Logf("proof.js (%s): %s", protocol, lines[len(lines)-1])
	return steps
}

// testJSSDK: the Dapr JavaScript SDK from npm, unchanged, over HTTP and
// gRPC, with and without an API token: it starts at once (its metadata
// probe is answered), health.isHealthy() is true, invoker.invoke works with
// every verb, a query and a JSON body, and an unknown app's error names it.
func testJSSDK(t *testing.T, m *mesh) {
	installJSSDK(t)
	for _, tc := range []struct {
		name, protocol string
		sidecar        *harnessSidecar
		caller, token  string
	}{
		{"http", "http", side(m.js), appJS, ""},
		{"grpc", "grpc", side(m.js), appJS, ""},
		{"http with API token", "http", side(m.guarded), appGuarded, apiToken},
		{"grpc with API token", "grpc", side(m.guarded), appGuarded, apiToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := m.app.hits.Load()
			steps := runProof(t, tc.protocol, tc.sidecar.Ports.HTTP, tc.sidecar.Ports.GRPC, tc.token)
			s := steps["start"]
			var ms int
			if !s.OK || json.Unmarshal(s.Value, &ms) != nil || ms > 5000 {
				t.Errorf("client.start(): %+v: want it ready at once, not after the SDK's 30-60 s wait", s)
			}
			if s := steps["isHealthy"]; !s.OK || string(s.Value) != "true" {
				t.Errorf("health.isHealthy() = %+v, want true", s)
			}
			var md struct {
				ID       string            `json:"id"`
				Extended map[string]string `json:"extended"`
			}
			if s := steps["metadataSet"]; !s.OK {
				t.Errorf("metadata.set() = %+v", s)
			}
			if s := steps["metadata"]; !s.OK || json.Unmarshal(s.Value, &md) != nil || md.ID != tc.caller {
				t.Errorf("metadata.get() = %+v, want id %q", s, tc.caller)
			}
			if md.Extended["proof"] != "js-"+tc.protocol {
				t.Errorf("metadata.get() extended = %v: want the attribute metadata.set() set", md.Extended)
			}
			for _, verb := range []string{"get", "post", "put", "patch", "delete"} {
				s := steps["invoke_"+verb]
				var e echoed
				if !s.OK || json.Unmarshal(s.Value, &e) != nil {
					t.Errorf("invoke %s: %+v", verb, s)
					continue
				}
				if e.Method != strings.ToUpper(verb) || e.Path != "/echo/"+verb || e.RawQuery != "x=1&y=two" || e.CallerAppID != tc.caller {
					t.Errorf("invoke %s: the app saw %s %s ?%s from %q", verb, e.Method, e.Path, e.RawQuery, e.CallerAppID)
				}
				if verb != "get" {
					var body map[string]string
					if err := json.Unmarshal([]byte(e.Body), &body); err != nil || body["hello"] != "world" || body["verb"] != verb {
						t.Errorf("invoke %s: the app got body %q, want the JSON sent", verb, e.Body)
					}
					if ct := strings.Join(e.Headers["Content-Type"], ","); !strings.HasPrefix(ct, "application/json") {
						t.Errorf("invoke %s: content type %q", verb, ct)
					}
				}
				if tok := e.Headers["Dapr-Api-Token"]; len(tok) != 1 || tok[0] != appAPIToken {
					t.Errorf("invoke %s: the app got dapr-api-token %q, want only its sidecar's", verb, tok)
				}
			}
			if got := m.app.hits.Load() - before; got != 5 {
				t.Errorf("the app got %d calls, want 5", got)
			}
			if s := steps["invoke_unknown"]; s.OK || !strings.Contains(s.Error, appUnknown) {
				t.Errorf("invoke of an unknown app: %+v, want an error naming %q", s, appUnknown)
			}
		})
	}
}

type harnessSidecar = harness.Sidecar

func side(s *harness.Sidecar) *harnessSidecar { return s }
