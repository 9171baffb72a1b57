package mdns

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"time"

	"github.com/meshd/meshd/config/strictyaml"
)

// Defaults of Config.
const (
	DefaultService    = "_meshd._tcp"
	DefaultTTL        = 5 * time.Second
	DefaultBrowseWait = 300 * time.Millisecond
	MinTTL            = time.Second
	MaxTTL            = time.Hour
	maxConfigSize     = 1 << 20
)

// Config is the optional --resolver-config file of the mdns backend:
//
//	interfaces: [eth0, lo]   # default: every interface that is up and multicast-capable
//	ttl: 5s                  # TTL of the records; re-announced every ttl/3
//	service: _meshd._tcp     # DNS-SD service type (domain local.)
//	browseWait: 300ms        # how long the first browse collects answers at start
type Config struct {
	Interfaces []string      `yaml:"interfaces"`
	TTL        time.Duration `yaml:"ttl"`
	Service    string        `yaml:"service"`
	BrowseWait time.Duration `yaml:"browseWait"`
}

var serviceRE = regexp.MustCompile(`^_[A-Za-z0-9]([A-Za-z0-9-]{0,13}[A-Za-z0-9])?\._(tcp|udp)$`)

// LoadConfig reads the file at path ("" gives the defaults).
func LoadConfig(path string) (Config, error) {
	if path == "" {
		return ParseConfig(nil)
	}
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("mdns: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return Config{}, fmt.Errorf("mdns: %s: %w", path, err)
	}
	if len(data) > maxConfigSize {
		return Config{}, fmt.Errorf("mdns: %s: larger than %d bytes", path, maxConfigSize)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%w (file %s)", err, path)
	}
	return c, nil
}

// ParseConfig parses a config document strictly (unknown fields, duplicate
// keys, a second document, bad values are errors) and fills in defaults.
// Empty input gives the defaults.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	if err := strictyaml.Decode(data, &c); err != nil && !errors.Is(err, strictyaml.ErrEmpty) {
		return Config{}, fmt.Errorf("mdns: config: %w", err)
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.TTL < MinTTL || c.TTL > MaxTTL {
		return Config{}, fmt.Errorf("mdns: config: ttl %s is outside %s..%s", c.TTL, MinTTL, MaxTTL)
	}
	if c.TTL%time.Second != 0 {
		return Config{}, fmt.Errorf("mdns: config: ttl %s is not whole seconds (DNS TTLs are)", c.TTL)
	}
	if c.Service == "" {
		c.Service = DefaultService
	}
	if !serviceRE.MatchString(c.Service) {
		return Config{}, fmt.Errorf("mdns: config: service %q is not a DNS-SD service type like _meshd._tcp", c.Service)
	}
	if c.BrowseWait == 0 {
		c.BrowseWait = DefaultBrowseWait
	}
	if c.BrowseWait < 0 || c.BrowseWait > 10*time.Second {
		return Config{}, fmt.Errorf("mdns: config: browseWait %s is outside 0..10s", c.BrowseWait)
	}
	seen := map[string]bool{}
	for i, name := range c.Interfaces {
		if name == "" || len(name) > 15 {
			return Config{}, fmt.Errorf("mdns: config: interfaces[%d]: %q is not an interface name", i, name)
		}
		if seen[name] {
			return Config{}, fmt.Errorf("mdns: config: interfaces[%d]: %q is listed twice", i, name)
		}
		seen[name] = true
	}
	return c, nil
}
