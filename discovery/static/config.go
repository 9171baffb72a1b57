package static

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/config/strictyaml"
	"github.com/meshd/meshd/discovery"
)

// MaxFileSize is the largest file Load accepts.
const MaxFileSize = 4 << 20

// File is the static resolver's YAML document.
//
//	apps:
//	  - appId: orders
//	    namespace: default          # optional, default "default"
//	    addresses: ["127.0.0.1:50012", "127.0.0.1:50022"]
type File struct {
	Apps *[]App `yaml:"apps"`
}

// App is one app and the internal (mTLS) addresses of its sidecars.
type App struct {
	AppID     string   `yaml:"appId"`
	Namespace string   `yaml:"namespace"`
	Addresses []string `yaml:"addresses"`
}

// Load reads and parses the file at path.
func Load(path string) (map[discovery.Target][]discovery.Endpoint, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	set, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("static: %s: %w", path, err)
	}
	return set, nil
}

// Parse validates a static resolver document strictly and returns its
// endpoint set. It rejects unknown fields, duplicate keys, a missing apps
// list, a second non-empty YAML document, invalid app IDs and namespaces (the rules of
// certs.ValidateAppID and certs.ValidateNamespace: no dots, at most 64
// characters, SPIFFE path segment characters), an app listed twice, an app
// without addresses, and addresses that are not host:port with a port in
// 1..65535 or that repeat within an app. Errors name the app by its index
// and line.
func Parse(data []byte) (map[discovery.Target][]discovery.Endpoint, error) {
	set, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("static: %w", err)
	}
	return set, nil
}

func parse(data []byte) (map[discovery.Target][]discovery.Endpoint, error) {
	var f File
	if err := strictyaml.Decode(data, &f); err != nil {
		if errors.Is(err, strictyaml.ErrEmpty) {
			return nil, errors.New("file is empty (want an apps: list)")
		}
		return nil, err
	}
	if f.Apps == nil {
		return nil, errors.New("no apps: list (write apps: [] for none)")
	}
	set := make(map[discovery.Target][]discovery.Endpoint, len(*f.Apps))
	for i, app := range *f.Apps {
		t, epList, err := app.validate()
		if err == nil {
			if _, dup := set[t]; dup {
				err = fmt.Errorf("app %q in namespace %q is listed twice", t.AppID, t.Namespace)
			}
		}
		if err != nil {
			where := fmt.Sprintf("apps[%d]", i)
			if lines := appLines(data); i < len(lines) {
				where += fmt.Sprintf(" (line %d)", lines[i])
			}
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		set[t] = epList
	}
	return set, nil
}

func (a App) validate() (discovery.Target, []discovery.Endpoint, error) {
	t := discovery.Target{AppID: a.AppID, Namespace: a.Namespace}
	if t.Namespace == "" {
		t.Namespace = discovery.DefaultNamespace
	}
	if err := certs.ValidateAppID(t.AppID); err != nil {
		return t, nil, fmt.Errorf("appId: %w", err)
	}
	if err := certs.ValidateNamespace(t.Namespace); err != nil {
		return t, nil, fmt.Errorf("app %q: namespace: %w", t.AppID, err)
	}
	if len(a.Addresses) == 0 {
		return t, nil, fmt.Errorf("app %q: addresses: empty", t.AppID)
	}
	seen := make(map[string]bool, len(a.Addresses))
	eps := make([]discovery.Endpoint, 0, len(a.Addresses))
	for _, addr := range a.Addresses {
		if err := ValidateAddress(addr); err != nil {
			return t, nil, fmt.Errorf("app %q: %w", t.AppID, err)
		}
		if seen[addr] {
			return t, nil, fmt.Errorf("app %q: address %q is listed twice", t.AppID, addr)
		}
		seen[addr] = true
		eps = append(eps, discovery.Endpoint{Address: addr})
	}
	return t, eps, nil
}

// ValidateAddress reports whether addr is host:port, where host is an IP
// address (IPv6 in brackets) or a DNS name and port is a number in 1..65535.
func ValidateAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: not host:port: %w", addr, err)
	}
	if host == "" {
		return fmt.Errorf("address %q: empty host", addr)
	}
	if port == "" || strings.TrimLeft(port, "0123456789") != "" {
		return fmt.Errorf("address %q: port %q is not a number", addr, port)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("address %q: port %q is not in 1..65535", addr, port)
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if strings.HasPrefix(addr, "[") {
		return fmt.Errorf("address %q: %q in brackets is not an IPv6 address", addr, host)
	}
	if !discovery.ValidHostname(host) {
		return fmt.Errorf("address %q: host %q is neither an IP address nor a DNS name", addr, host)
	}
	return nil
}

// appLines returns the line of each entry of the apps list, for messages.
// It is best effort: any surprise gives nil.
func appLines(data []byte) []int {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 {
		return nil
	}
	m := doc.Content[0]
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "apps" && m.Content[i+1].Kind == yaml.SequenceNode {
			var lines []int
			for _, n := range m.Content[i+1].Content {
				lines = append(lines, n.Line)
			}
			return lines
		}
	}
	return nil
}

// readFile reads the resolver file (at most MaxFileSize bytes).
func readFile(path string) ([]byte, error) {
	data, err := discovery.ReadFile(path, MaxFileSize)
	if err != nil {
		return nil, fmt.Errorf("static: %w", err)
	}
	return data, nil
}
