package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/meshd/meshd/sidecar"
)

// daprFlags are daprd's flag names meshd accepts, so that a launcher made
// for daprd (the Dapr CLI's `dapr run`, a systemd unit, a Helm annotation
// set) can start meshd in its place: synonyms of meshd's own flags, flags
// meshd acts on in daprd's way, and flags that do not apply to meshd,
// accepted with a one-line warning where ignoring them is harmless and
// refused where it is not.
type daprFlags struct {
	resourcesPath     []string
	listenAddresses   string
	appMaxConcurrency int
	appSSL            bool
	enableMTLS        bool
	logAsJSON         bool
	gracefulShutdown  int
	maxRequestSizeMB  int
	maxBodySize       string
	apiTokenFile      string
	appAPITokenFile   string
}

// ignoredFlags are daprd flags that name something meshd does not have;
// ignoring them changes nothing a meshd user relies on. Each is accepted
// and logged once.
var ignoredFlags = []struct {
	name, note string
	isBool     bool
}{
	{"mode", "meshd runs the same everywhere; the resolver (--resolver) decides discovery", false},
	{"placement-host-address", "meshd has no actors", false},
	{"scheduler-host-address", "meshd has no jobs, reminders or workflows", false},
	{"actors-service", "meshd has no actors", false},
	{"reminders-service", "meshd has no reminders", false},
	{"control-plane-trust-domain", "meshd checks peers against --trust-domain", false},
	{"allowed-origins", "meshd's API is on loopback only and sets no CORS headers", false},
	{"dapr-http-read-buffer-size", "meshd bounds request heads with --max-request-header-fields", false},
	{"read-buffer-size", "meshd bounds request heads with --max-request-header-fields", false},
	{"dapr-block-shutdown-duration", "meshd drains in-flight calls for --shutdown-grace", false},
	{"enable-api-logging", "meshd logs denied calls in its decision log", true},
	{"disable-builtin-k8s-secret-store", "meshd has no secret stores", true},
	{"wait", "meshd has no outbound wait; poll /v1.0/healthz/outbound", true},
}

// addDaprFlags defines daprd's names on f.
func addDaprFlags(f *pflag.FlagSet, cfg *sidecar.Config) *daprFlags {
	d := &daprFlags{}
	// Synonyms: the same variable as meshd's flag of that meaning.
	f.IntVar(&cfg.HTTPPort, "dapr-http-port", 3500, "daprd's name of --http-port")
	f.IntVar(&cfg.GRPCPort, "dapr-grpc-port", 50001, "daprd's name of --grpc-port")
	f.IntVar(&cfg.InternalPort, "dapr-internal-grpc-port", 50002, "daprd's name of --internal-port")
	f.StringVar(&cfg.ListenAddress, "dapr-internal-grpc-listen-address", "", "daprd's name of --listen-address")
	f.IntVar(&cfg.PublicPort, "dapr-public-port", 0, "daprd's name of --public-port")
	f.StringVar(&cfg.PublicListenAddress, "dapr-public-listen-address", "", "daprd's name of --public-listen-address")
	// daprd's control plane flags name meshd's control plane (--resolver xds).
	f.StringVar(&cfg.ControlPlaneAddress, "control-plane-address", "", "with --resolver xds: host:port of meshd's control plane (instead of a --resolver-config file); other resolvers ignore it with a warning, as daprd's")
	f.StringVar(&cfg.ControlPlaneNamespace, "control-plane-namespace", "", "with --resolver xds and --control-plane-address: the control plane's namespace, so its SPIFFE ID is spiffe://{trust-domain}/ns/{namespace}/controlplane (default meshd-system)")
	f.StringVar(&cfg.UnixDomainSocket, "unix-domain-socket", "", "directory: serve the app-facing HTTP and gRPC APIs on the unix sockets dapr-{app-id}-http.socket and dapr-{app-id}-grpc.socket there (mode 0600) instead of --http-port and --grpc-port, as daprd")
	// daprd's flags meshd acts on in daprd's way.
	f.StringSliceVar(&d.resourcesPath, "resources-path", nil, "daprd's resources directories: a Resiliency document there is used as --resiliency; components are not loaded (meshd has none; a warning names them)")
	f.StringSliceVar(&d.resourcesPath, "components-path", nil, "daprd's alias of --resources-path")
	f.StringVar(&d.listenAddresses, "dapr-listen-addresses", "127.0.0.1", "daprd's API listen addresses: meshd's app-facing API is on loopback only, so only 127.0.0.1, localhost or [::1] are accepted")
	f.IntVar(&d.appMaxConcurrency, "app-max-concurrency", -1, "daprd's app concurrency limit: meshd has none, so only -1 (no limit) is accepted")
	f.BoolVar(&d.appSSL, "app-ssl", false, "daprd's (deprecated) TLS to the app: --app-protocol http becomes https, grpc becomes grpcs")
	f.BoolVar(&d.enableMTLS, "enable-mtls", true, "daprd's mTLS switch: meshd always uses mTLS between sidecars (false: a warning; --insecure turns it off)")
	f.BoolVar(&d.logAsJSON, "log-as-json", false, "daprd's name of --log-format json")
	f.IntVar(&d.gracefulShutdown, "dapr-graceful-shutdown-seconds", 0, "daprd's name of --shutdown-grace, in seconds")
	f.IntVar(&d.maxRequestSizeMB, "dapr-http-max-request-size", 4, "largest InvokeService message (and OnInvoke body of a gRPC app), in MB (HTTP bodies stream); -1 or 0: the default, as the Dapr CLI passes it")
	f.StringVar(&d.maxBodySize, "max-body-size", "4Mi", "daprd's newer form of --dapr-http-max-request-size, a quantity (4Mi, 8M, 1048576); -1: the default")
	f.StringVar(&d.apiTokenFile, "dapr-api-token-file", "", "file holding the app's API token (as env DAPR_API_TOKEN): every app-facing call but health must carry it in dapr-api-token")
	f.StringVar(&d.appAPITokenFile, "app-api-token-file", "", "file holding the token sent to the app as dapr-api-token on every inbound call (as env APP_API_TOKEN)")
	for _, fl := range ignoredFlags {
		usage := "daprd's; accepted and ignored with a warning: " + fl.note
		if fl.isBool {
			f.Bool(fl.name, false, usage)
			continue
		}
		f.String(fl.name, "", usage)
	}
	return d
}

// preLog applies what must be known before the logger exists.
func (d *daprFlags) preLog(f *pflag.FlagSet, logFormat *string) {
	if f.Changed("log-as-json") && d.logAsJSON && !f.Changed("log-format") {
		*logFormat = "json"
	}
}

// apply checks daprd's flags and folds them into cfg, warning once for each
// ignored one.
func (d *daprFlags) apply(f *pflag.FlagSet, cfg *sidecar.Config, appProtocol *string, log *slog.Logger) error {
	for _, pair := range [][2]string{{"http-port", "dapr-http-port"}, {"grpc-port", "dapr-grpc-port"},
		{"internal-port", "dapr-internal-grpc-port"}, {"listen-address", "dapr-internal-grpc-listen-address"},
		{"public-port", "dapr-public-port"}, {"public-listen-address", "dapr-public-listen-address"}} {
		if f.Changed(pair[0]) && f.Changed(pair[1]) {
			return fmt.Errorf("meshd: --%s and --%s are the same setting: give one", pair[0], pair[1])
		}
	}
	if f.Changed("dapr-listen-addresses") {
		for a := range strings.SplitSeq(d.listenAddresses, ",") {
			if a = strings.TrimSpace(a); !isLoopbackHost(a) {
				return fmt.Errorf("meshd: --dapr-listen-addresses %q: meshd serves its app-facing API on loopback only (127.0.0.1); %q is not loopback", d.listenAddresses, a)
			}
		}
	}
	if d.appMaxConcurrency != -1 {
		return fmt.Errorf("meshd: --app-max-concurrency %d: meshd does not limit the calls to the app (only -1, no limit, is accepted)", d.appMaxConcurrency)
	}
	cfg.AppMaxConcurrency = -1
	if d.appSSL {
		switch *appProtocol {
		case "http":
			*appProtocol = "https"
		case "grpc":
			*appProtocol = "grpcs"
		case "https", "grpcs":
		default:
			return fmt.Errorf("meshd: --app-ssl with --app-protocol %s: want http or grpc", *appProtocol)
		}
	}
	if f.Changed("enable-mtls") && !d.enableMTLS && !cfg.Insecure {
		log.Warn("meshd: --enable-mtls=false ignored: meshd always uses mTLS between sidecars (--insecure turns it off, for development only)")
	}
	if f.Changed("dapr-graceful-shutdown-seconds") {
		if f.Changed("shutdown-grace") {
			return errors.New("meshd: --shutdown-grace and --dapr-graceful-shutdown-seconds are the same setting: give one")
		}
		if d.gracefulShutdown < 0 {
			return fmt.Errorf("meshd: --dapr-graceful-shutdown-seconds %d: want 0 or more", d.gracefulShutdown)
		}
		cfg.ShutdownGrace = time.Duration(d.gracefulShutdown) * time.Second
	}
	// As daprd: --max-body-size wins; -1 (the Dapr CLI's "unset") and 0
	// mean the default.
	switch {
	case f.Changed("max-body-size"):
		n, err := parseQuantity(d.maxBodySize)
		if err != nil {
			return fmt.Errorf("meshd: --max-body-size %q: %w", d.maxBodySize, err)
		}
		if n > 0 {
			cfg.MaxMessageSize = int(n)
		}
	case d.maxRequestSizeMB > 1<<10:
		return fmt.Errorf("meshd: --dapr-http-max-request-size %d: at most 1024 (MB)", d.maxRequestSizeMB)
	case d.maxRequestSizeMB > 0:
		cfg.MaxMessageSize = d.maxRequestSizeMB << 20
	}
	var err error
	if cfg.APIToken, err = token("DAPR_API_TOKEN", "--dapr-api-token-file", d.apiTokenFile); err != nil {
		return err
	}
	if cfg.AppAPIToken, err = token("APP_API_TOKEN", "--app-api-token-file", d.appAPITokenFile); err != nil {
		return err
	}
	if len(d.resourcesPath) > 0 {
		if err := d.resources(cfg, log); err != nil {
			return err
		}
	}
	if cfg.Resolver != "xds" {
		for _, name := range []string{"control-plane-address", "control-plane-namespace"} {
			if f.Changed(name) {
				log.Warn("meshd: daprd flag ignored", "flag", "--"+name, "why", "only --resolver xds has a control plane (meshd has no Dapr operator)")
			}
		}
		cfg.ControlPlaneAddress, cfg.ControlPlaneNamespace = "", ""
	}
	for _, fl := range ignoredFlags {
		if f.Changed(fl.name) {
			log.Warn("meshd: daprd flag ignored", "flag", "--"+fl.name, "why", fl.note)
		}
	}
	return nil
}

// token reads an API token from a file flag or the environment (the file
// wins); surrounding white space is trimmed. An empty file is an error: a
// token that silently turned off the check would fail open.
func token(env, flag, file string) (string, error) {
	if file == "" {
		return os.Getenv(env), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("meshd: %s: %w", flag, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("meshd: %s %s: the file is empty", flag, file)
	}
	return tok, nil
}

func isLoopbackHost(h string) bool {
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// resources reads daprd's resources directories: one Resiliency document
// becomes --resiliency (unless that is given); everything else (components,
// subscriptions, HTTP endpoints, configurations) is named in one warning.
func (d *daprFlags) resources(cfg *sidecar.Config, log *slog.Logger) error {
	var resiliencies, ignored []string
	for _, dir := range d.resourcesPath {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("meshd: --resources-path: %w", err)
		}
		for _, e := range entries {
			ext := filepath.Ext(e.Name())
			if e.IsDir() || (ext != ".yaml" && ext != ".yml") {
				continue
			}
			path := filepath.Join(dir, e.Name())
			kinds, err := yamlKinds(path)
			if err != nil {
				return fmt.Errorf("meshd: --resources-path: %s: %w", path, err)
			}
			for _, k := range kinds {
				if k == "Resiliency" {
					if !slices.Contains(resiliencies, path) {
						resiliencies = append(resiliencies, path)
					}
					continue
				}
				ignored = append(ignored, k+" in "+path)
			}
		}
	}
	switch {
	case len(resiliencies) > 1:
		return fmt.Errorf("meshd: --resources-path: %d files hold Resiliency documents (%s): meshd reads one; merge them or name one with --resiliency",
			len(resiliencies), strings.Join(resiliencies, ", "))
	case len(resiliencies) == 1 && cfg.ResiliencyFile == "":
		cfg.ResiliencyFile = resiliencies[0]
	case len(resiliencies) == 1:
		log.Warn("meshd: --resources-path: Resiliency document ignored: --resiliency names the file in force", "file", resiliencies[0])
	}
	if len(ignored) > 0 {
		log.Warn("meshd: --resources-path: not loaded: meshd has no Dapr components, subscriptions or HTTP endpoints", "resources", strings.Join(ignored, "; "))
	}
	return nil
}

// yamlKinds lists the kind of every document of a YAML file.
func yamlKinds(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var kinds []string
	for {
		var doc struct {
			Kind string `yaml:"kind"`
		}
		if err := dec.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				return kinds, nil
			}
			return nil, err
		}
		if doc.Kind != "" {
			kinds = append(kinds, doc.Kind)
		}
	}
}

// daprDuration is a duration flag that also takes daprd's bare integers,
// in the flag's unit (seconds for --app-health-probe-interval, milliseconds
// for --app-health-probe-timeout).
type daprDuration struct {
	d    *time.Duration
	unit time.Duration
}

func newDaprDuration(d *time.Duration, def, unit time.Duration) *daprDuration {
	*d = def
	return &daprDuration{d: d, unit: unit}
}

func (v *daprDuration) String() string { return v.d.String() }
func (v *daprDuration) Type() string   { return "duration" }

func (v *daprDuration) Set(s string) error {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 || n > int64(24*time.Hour/v.unit) {
			return fmt.Errorf("%d %s: out of range", n, unitName(v.unit))
		}
		*v.d = time.Duration(n) * v.unit
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration (5s, 500ms) or daprd's integer %s", unitName(v.unit))
	}
	*v.d = d
	return nil
}

func unitName(u time.Duration) string {
	if u == time.Second {
		return "seconds"
	}
	return "milliseconds"
}

// singleDashArgs doubles the dash of "-flag" arguments, as daprd does
// before parsing: daprd's flags were once Go's flag package, which takes
// "-app-id x", and launchers and scripts still pass them that way. Like
// daprd, it leaves "-h" and other two-character arguments alone (a value
// such as -1 stays a value), and everything after "--".
func singleDashArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "--" {
			copy(out[i:], args[i:])
			break
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			a = "-" + a
		}
		out[i] = a
	}
	return out
}

// parseQuantity reads a Kubernetes-style byte quantity as daprd's
// --max-body-size takes it: a number of bytes, or with a suffix K, M, G
// (powers of 1000) or Ki, Mi, Gi (powers of 1024); -1 is "unset". At most
// 1 GiB.
func parseQuantity(s string) (int64, error) {
	if s == "-1" {
		return -1, nil
	}
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"K", 1e3}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = v, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, errors.New("want a byte count such as 4Mi, 8M or 1048576")
	}
	if n > (1<<30)/mult {
		return 0, errors.New("at most 1Gi")
	}
	return n * mult, nil
}

// onceString is a string flag that may be given once: daprd takes
// --config several times and merges the files, meshd reads one, and
// silently keeping only the last would drop the others' access control.
type onceString struct {
	p   *string
	set bool
}

func (v *onceString) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

func (v *onceString) Type() string { return "string" }

func (v *onceString) Set(s string) error {
	if v.set {
		return errors.New("given more than once: meshd reads one Configuration file; merge them")
	}
	*v.p, v.set = s, true
	return nil
}
