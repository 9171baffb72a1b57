package consul

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/meshd/meshd/config/strictyaml"
	"github.com/meshd/meshd/discovery"
	"go.yaml.in/yaml/v3"
)

// MaxFileSize is the largest configuration file Load accepts.
const MaxFileSize = 1 << 20

// Defaults.
const (
	DefaultDaprPortMetaKey = "DAPR_PORT"
	// NamespaceMetaKey is the service meta key holding the instance's
	// namespace; instances without it (Dapr's) are in "default".
	NamespaceMetaKey = "namespace"
	// DefaultCheckInterval is the interval of the default health check.
	DefaultCheckInterval = time.Second
	// DefaultDeregisterAfter is the default check's
	// DeregisterCriticalServiceAfter: an instance that died without
	// deregistering is removed from the catalog after it.
	DefaultDeregisterAfter = time.Minute
	// DefaultWaitTime bounds each blocking query.
	DefaultWaitTime = 30 * time.Second
	// DefaultWatchIdleTimeout: a target without calls for this long (up to
	// half as long again) is no longer watched; its next call resolves it
	// again.
	DefaultWatchIdleTimeout = 10 * time.Minute
	// DefaultMaxWatches bounds the blocking queries one sidecar keeps open.
	// Each holds one HTTP connection to the agent, which by default accepts
	// 200 per client address (limits.http_max_conns_per_client): past it the
	// agent answers 429 and watches fail.
	DefaultMaxWatches = 128
	// MaxMaxWatches is the largest maxWatches accepted.
	MaxMaxWatches = 4096
)

// Config is the consul resolver's YAML document: the fields of Dapr's
// consul name resolution component (the `configuration:` block of its
// nameResolution), camelCase as Dapr documents them.
//
//	client:
//	  address: 127.0.0.1:8500
//	selfRegister: true
//	tags: [meshd]
//	meta: {team: payments}
type Config struct {
	Client          *Client           `yaml:"client"`
	QueryOptions    *QueryOptions     `yaml:"queryOptions"`
	Checks          []Check           `yaml:"checks"`
	Tags            []string          `yaml:"tags"`
	Meta            map[string]string `yaml:"meta"`
	DaprPortMetaKey string            `yaml:"daprPortMetaKey"`
	SelfRegister    bool              `yaml:"selfRegister"`
	// SelfDeregister deregisters the instance when the sidecar stops.
	// Unset, it follows SelfRegister (Dapr's default is false, which leaves
	// a dead registration behind until its check deregisters it).
	SelfDeregister *bool `yaml:"selfDeregister"`
	// UseCache is accepted for Dapr compatibility: meshd always resolves
	// from a watch-fed cache, never with a round trip per call.
	UseCache *bool `yaml:"useCache"`
	// AdvancedRegistration is Dapr's full registration override; meshd
	// rejects it with a hint (see Parse).
	AdvancedRegistration any `yaml:"advancedRegistration"`

	// WatchIdleTimeout (meshd's own) ends the watch of a target that had no
	// call for this long (default DefaultWatchIdleTimeout).
	WatchIdleTimeout Duration `yaml:"watchIdleTimeout"`
	// MaxWatches (meshd's own) bounds the blocking queries open at once
	// (default DefaultMaxWatches, at most MaxMaxWatches). Targets called
	// beyond it are polled every PollInterval until one is free.
	MaxWatches int `yaml:"maxWatches"`
}

// Client is the agent connection (Dapr: *api.Config).
type Client struct {
	Address    string    `yaml:"address"`
	Scheme     string    `yaml:"scheme"`
	PathPrefix string    `yaml:"pathPrefix"`
	Datacenter string    `yaml:"datacenter"`
	HTTPAuth   *HTTPAuth `yaml:"httpAuth"`
	WaitTime   Duration  `yaml:"waitTime"`
	Token      string    `yaml:"token"`
	TokenFile  string    `yaml:"tokenFile"`
	Namespace  string    `yaml:"namespace"`
	Partition  string    `yaml:"partition"`
	TLSConfig  *TLS      `yaml:"tlsConfig"`
}

// HTTPAuth is HTTP basic auth towards the agent.
type HTTPAuth struct {
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

// TLS configures HTTPS towards the agent.
type TLS struct {
	Address            string `yaml:"address"`
	CAFile             string `yaml:"caFile"`
	CAPath             string `yaml:"caPath"`
	CertFile           string `yaml:"certFile"`
	KeyFile            string `yaml:"keyFile"`
	InsecureSkipVerify bool   `yaml:"insecureSkipVerify"`
}

// QueryOptions are applied to the health queries (Dapr: *api.QueryOptions).
type QueryOptions struct {
	Datacenter        string            `yaml:"datacenter"`
	Namespace         string            `yaml:"namespace"`
	Partition         string            `yaml:"partition"`
	Peer              string            `yaml:"peer"`
	AllowStale        bool              `yaml:"allowStale"`
	RequireConsistent bool              `yaml:"requireConsistent"`
	UseCache          bool              `yaml:"useCache"`
	MaxAge            Duration          `yaml:"maxAge"`
	StaleIfError      Duration          `yaml:"staleIfError"`
	WaitTime          Duration          `yaml:"waitTime"` // blocking query bound (default 30s)
	Token             string            `yaml:"token"`
	Near              string            `yaml:"near"`
	NodeMeta          map[string]string `yaml:"nodeMeta"`
	Filter            string            `yaml:"filter"`
}

// Check is one health check of the registration (Dapr:
// *api.AgentServiceCheck). Values may use the placeholders of Placeholders.
type Check struct {
	Name                           string              `yaml:"name"`
	CheckID                        string              `yaml:"checkID"`
	Interval                       Duration            `yaml:"interval"`
	Timeout                        Duration            `yaml:"timeout"`
	TTL                            Duration            `yaml:"ttl"`
	HTTP                           string              `yaml:"http"`
	Method                         string              `yaml:"method"`
	Header                         map[string][]string `yaml:"header"`
	Body                           string              `yaml:"body"`
	TCP                            string              `yaml:"tcp"`
	GRPC                           string              `yaml:"grpc"`
	TLSSkipVerify                  bool                `yaml:"tlsSkipVerify"`
	Status                         string              `yaml:"status"`
	Notes                          string              `yaml:"notes"`
	SuccessBeforePassing           int                 `yaml:"successBeforePassing"`
	FailuresBeforeCritical         int                 `yaml:"failuresBeforeCritical"`
	DeregisterCriticalServiceAfter Duration            `yaml:"deregisterCriticalServiceAfter"`
}

// Duration is a Go duration in YAML ("1s", "500ms").
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler (strictyaml.Duration's rules).
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	return (*strictyaml.Duration)(d).UnmarshalYAML(n)
}

func (d Duration) consul() string {
	if d == 0 {
		return ""
	}
	return time.Duration(d).String()
}

// Placeholders may appear as ${NAME} in checks, tags and meta values; they
// are replaced with the local instance's values when it registers.
var Placeholders = []string{"APP_ID", "NAMESPACE", "HOST_ADDRESS", "DAPR_INTERNAL_PORT", "DAPR_HTTP_PORT", "HEALTH_URL"}

// Compiled the first time a consul config is read, not in package init:
// metaKeyRe alone is ~1,700 allocations (its {1,128}), paid by every
// sidecar that links this backend (docs/performance.md, "Where a start's time goes").
var (
	placeholderRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`\$\{([^}]*)\}`) })
	metaKeyRe     = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`) })
)

// Load reads and parses the file at path.
func Load(path string) (*Config, error) {
	data, err := discovery.ReadFile(path, MaxFileSize)
	if err != nil {
		return nil, fmt.Errorf("consul: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return cfg, nil
}

// Parse validates a consul resolver document strictly: unknown fields,
// duplicate keys, more than one YAML document, bad durations, addresses and
// schemes, meta keys Consul refuses or that collide with the keys meshd
// writes, check statuses, unknown ${placeholders} and Dapr's
// advancedRegistration are errors. An empty document is the default
// configuration (agent at CONSUL_HTTP_ADDR or 127.0.0.1:8500, no
// registration).
func Parse(data []byte) (*Config, error) {
	cfg, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("consul: config: %w", err)
	}
	return cfg, nil
}

func parse(data []byte) (*Config, error) {
	var cfg Config
	if err := strictyaml.Decode(data, &cfg); err != nil && !errors.Is(err, strictyaml.ErrEmpty) {
		return nil, err
	}
	if cfg.AdvancedRegistration != nil {
		return nil, errors.New("advancedRegistration is not supported: use checks, tags and meta (meshd sets the name, ID, address and port itself)")
	}
	if cfg.DaprPortMetaKey == "" {
		cfg.DaprPortMetaKey = DefaultDaprPortMetaKey
	}
	switch {
	case cfg.WatchIdleTimeout > 0 && cfg.WatchIdleTimeout < Duration(time.Second):
		return nil, fmt.Errorf("watchIdleTimeout %s: at least 1s", time.Duration(cfg.WatchIdleTimeout))
	case cfg.MaxWatches < 0 || cfg.MaxWatches > MaxMaxWatches:
		return nil, fmt.Errorf("maxWatches %d: want 1 to %d", cfg.MaxWatches, MaxMaxWatches)
	}
	if !metaKeyRe().MatchString(cfg.DaprPortMetaKey) {
		return nil, fmt.Errorf("daprPortMetaKey %q: want 1-128 letters, digits, _ or -", cfg.DaprPortMetaKey)
	}
	if cfg.DaprPortMetaKey == NamespaceMetaKey {
		return nil, fmt.Errorf("daprPortMetaKey %q is the namespace key", cfg.DaprPortMetaKey)
	}
	if c := cfg.Client; c != nil {
		if c.Address != "" {
			if _, _, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(c.Address, "http://"), "https://")); err != nil && !strings.HasPrefix(c.Address, "unix://") {
				return nil, fmt.Errorf("client.address %q: want host:port or unix://path: %w", c.Address, err)
			}
		}
		switch c.Scheme {
		case "", "http", "https":
		default:
			return nil, fmt.Errorf("client.scheme %q: want http or https", c.Scheme)
		}
		if c.HTTPAuth != nil && c.HTTPAuth.Username == "" {
			return nil, errors.New("client.httpAuth: username is empty")
		}
	}
	for k, v := range cfg.Meta {
		if !metaKeyRe().MatchString(k) || strings.HasPrefix(k, "consul-") {
			return nil, fmt.Errorf("meta key %q: want 1-128 letters, digits, _ or -, not starting with consul-", k)
		}
		if k == cfg.DaprPortMetaKey || k == NamespaceMetaKey {
			return nil, fmt.Errorf("meta key %q is set by meshd (internal port / namespace)", k)
		}
		if len(v) > 512 {
			return nil, fmt.Errorf("meta %q: value longer than 512 characters", k)
		}
		if err := checkPlaceholders("meta "+k, v); err != nil {
			return nil, err
		}
	}
	for i, tag := range cfg.Tags {
		if tag == "" {
			return nil, fmt.Errorf("tags[%d]: empty", i)
		}
		if err := checkPlaceholders(fmt.Sprintf("tags[%d]", i), tag); err != nil {
			return nil, err
		}
	}
	ids := map[string]bool{}
	for i, c := range cfg.Checks {
		where := fmt.Sprintf("checks[%d]", i)
		kinds := 0
		for _, s := range []string{c.HTTP, c.TCP, c.GRPC} {
			if s != "" {
				kinds++
			}
		}
		if c.TTL != 0 {
			kinds++
		}
		if kinds != 1 {
			return nil, fmt.Errorf("%s: want exactly one of http, tcp, grpc, ttl", where)
		}
		if c.TTL == 0 && c.Interval == 0 {
			return nil, fmt.Errorf("%s: interval is required for http, tcp and grpc checks", where)
		}
		switch c.Status {
		case "", api.HealthPassing, api.HealthWarning, api.HealthCritical:
		default:
			return nil, fmt.Errorf("%s: status %q: want passing, warning or critical", where, c.Status)
		}
		if c.CheckID != "" {
			if ids[c.CheckID] {
				return nil, fmt.Errorf("%s: checkID %q used twice", where, c.CheckID)
			}
			ids[c.CheckID] = true
		}
		for _, s := range []string{c.Name, c.CheckID, c.HTTP, c.TCP, c.GRPC, c.Notes} {
			if err := checkPlaceholders(where, s); err != nil {
				return nil, err
			}
		}
	}
	return &cfg, nil
}

func (cfg *Config) watchIdleTimeout() time.Duration {
	if cfg.WatchIdleTimeout == 0 {
		return DefaultWatchIdleTimeout
	}
	return time.Duration(cfg.WatchIdleTimeout)
}

func (cfg *Config) maxWatches() int {
	if cfg.MaxWatches == 0 {
		return DefaultMaxWatches
	}
	return cfg.MaxWatches
}

func checkPlaceholders(where, s string) error {
	if strings.Count(s, "${") != len(placeholderRe().FindAllStringIndex(s, -1)) {
		return fmt.Errorf("%s: unterminated ${ in %q", where, s)
	}
	for _, m := range placeholderRe().FindAllStringSubmatch(s, -1) {
		if !slices.Contains(Placeholders, m[1]) {
			return fmt.Errorf("%s: unknown placeholder ${%s} (known: %s)", where, m[1], strings.Join(Placeholders, ", "))
		}
	}
	return nil
}

// expand replaces the placeholders of s with vals.
func expand(s string, vals map[string]string) string {
	if !strings.Contains(s, "${") {
		return s
	}
	return placeholderRe().ReplaceAllStringFunc(s, func(m string) string { return vals[m[2:len(m)-1]] })
}

// apiConfig builds the client configuration: api.DefaultConfig (which
// honours CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN and friends) overridden by the
// file's client block.
func (cfg *Config) apiConfig() *api.Config {
	ac := api.DefaultNonPooledConfig()
	c := cfg.Client
	if c == nil {
		return ac
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&ac.Address, c.Address)
	set(&ac.Scheme, c.Scheme)
	set(&ac.PathPrefix, c.PathPrefix)
	set(&ac.Datacenter, c.Datacenter)
	set(&ac.Token, c.Token)
	set(&ac.TokenFile, c.TokenFile)
	set(&ac.Namespace, c.Namespace)
	set(&ac.Partition, c.Partition)
	if c.WaitTime != 0 {
		ac.WaitTime = time.Duration(c.WaitTime)
	}
	if c.HTTPAuth != nil {
		ac.HttpAuth = &api.HttpBasicAuth{Username: c.HTTPAuth.Username, Password: c.HTTPAuth.Password}
	}
	if t := c.TLSConfig; t != nil {
		ac.TLSConfig = api.TLSConfig{Address: t.Address, CAFile: t.CAFile, CAPath: t.CAPath,
			CertFile: t.CertFile, KeyFile: t.KeyFile, InsecureSkipVerify: t.InsecureSkipVerify}
	}
	return ac
}

// queryOptions is the base of every health query.
func (cfg *Config) queryOptions() (api.QueryOptions, time.Duration) {
	wait := DefaultWaitTime
	q := cfg.QueryOptions
	if q == nil {
		return api.QueryOptions{}, wait
	}
	if q.WaitTime != 0 {
		wait = time.Duration(q.WaitTime)
	}
	return api.QueryOptions{
		Datacenter: q.Datacenter, Namespace: q.Namespace, Partition: q.Partition, Peer: q.Peer,
		AllowStale: q.AllowStale, RequireConsistent: q.RequireConsistent, UseCache: q.UseCache,
		MaxAge: time.Duration(q.MaxAge), StaleIfError: time.Duration(q.StaleIfError),
		Token: q.Token, Near: q.Near, NodeMeta: q.NodeMeta, Filter: q.Filter,
	}, wait
}

// selfDeregister reports whether Close deregisters.
func (cfg *Config) selfDeregister() bool {
	if cfg.SelfDeregister != nil {
		return *cfg.SelfDeregister
	}
	return cfg.SelfRegister
}

// registration builds the local instance's registration.
func (cfg *Config) registration(appID, ns, advertise, healthURL string) (*api.AgentServiceRegistration, error) {
	host, portStr, err := net.SplitHostPort(advertise)
	if err != nil {
		return nil, fmt.Errorf("local address %q: %w", advertise, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port > 65535 {
		return nil, fmt.Errorf("local address %q: bad port", advertise)
	}
	httpPort := ""
	if u, err := url.Parse(healthURL); healthURL != "" && err == nil {
		httpPort = u.Port()
	}
	vals := map[string]string{"APP_ID": appID, "NAMESPACE": ns, "HOST_ADDRESS": host,
		"DAPR_INTERNAL_PORT": portStr, "DAPR_HTTP_PORT": httpPort, "HEALTH_URL": healthURL}
	id := serviceID(appID, ns, host, port)
	reg := &api.AgentServiceRegistration{
		ID: id, Name: appID, Address: host, Port: port,
		Meta: map[string]string{cfg.DaprPortMetaKey: portStr, NamespaceMetaKey: ns},
	}
	for _, t := range cfg.Tags {
		reg.Tags = append(reg.Tags, expand(t, vals))
	}
	for k, v := range cfg.Meta {
		reg.Meta[k] = expand(v, vals)
	}
	for _, c := range cfg.Checks {
		reg.Checks = append(reg.Checks, &api.AgentServiceCheck{
			Name: expand(c.Name, vals), CheckID: expand(c.CheckID, vals),
			Interval: c.Interval.consul(), Timeout: c.Timeout.consul(), TTL: c.TTL.consul(),
			HTTP: expand(c.HTTP, vals), Method: c.Method, Header: c.Header, Body: c.Body,
			TCP: expand(c.TCP, vals), GRPC: expand(c.GRPC, vals), TLSSkipVerify: c.TLSSkipVerify,
			Status: c.Status, Notes: expand(c.Notes, vals),
			SuccessBeforePassing: c.SuccessBeforePassing, FailuresBeforeCritical: c.FailuresBeforeCritical,
			DeregisterCriticalServiceAfter: c.DeregisterCriticalServiceAfter.consul(),
		})
	}
	if len(reg.Checks) == 0 && healthURL != "" {
		reg.Checks = api.AgentServiceChecks{{
			Name:                           "meshd sidecar and app health",
			CheckID:                        "meshd:" + id,
			HTTP:                           healthURL,
			Interval:                       DefaultCheckInterval.String(),
			Timeout:                        DefaultCheckInterval.String(),
			DeregisterCriticalServiceAfter: DefaultDeregisterAfter.String(),
		}}
	}
	return reg, nil
}

// serviceID is meshd-{app}-{ns}-{host}-{port}, with characters other than
// letters, digits, '.', '_' and '-' replaced by '-'.
func serviceID(appID, ns, host string, port int) string {
	s := fmt.Sprintf("meshd-%s-%s-%s-%d", appID, ns, host, port)
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	return string(b)
}
