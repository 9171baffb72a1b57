package resiliency

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Document kind and version read.
const (
	APIVersion = "dapr.io/v1alpha1"
	Kind       = "Resiliency"
)

// maxFileSize bounds a resiliency file.
const maxFileSize = 4 << 20

// PolicyNames names the policies of one target ("" for none).
type PolicyNames struct {
	Timeout        string
	Retry          string
	CircuitBreaker string
}

// Spec is a parsed, validated set of Resiliency documents (one file may
// hold several, separated by "---"; names must be unique across them).
type Spec struct {
	Names  []string // metadata.name of each document
	Scopes []string // union of the documents' scopes (empty: all apps)

	Timeouts        map[string]time.Duration
	Retries         map[string]*Retry
	CircuitBreakers map[string]*BreakerPolicy
	// Apps are the spec.targets.apps entries, keyed "app" (any namespace)
	// or "app.namespace" (a meshd extension).
	Apps map[string]PolicyNames
}

// LoadFile reads and parses a Resiliency file.
func LoadFile(path string) (*Spec, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("resiliency: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("resiliency: read %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("resiliency: %s: larger than %d bytes", path, maxFileSize)
	}
	return Parse(path, data)
}

// Parse parses Resiliency documents. Errors name file:line. Unknown fields,
// wrong types, bad durations, bad status-code lists, trip expressions that do
// not compile and references to undefined policies are errors.
func Parse(file string, data []byte) (*Spec, error) {
	s := &Spec{
		Timeouts:        map[string]time.Duration{},
		Retries:         map[string]*Retry{},
		CircuitBreakers: map[string]*BreakerPolicy{},
		Apps:            map[string]PolicyNames{},
	}
	p := &parser{file: file, s: s}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	docs := 0
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: resiliency: %w", file, err)
		}
		if len(n.Content) == 0 {
			continue
		}
		if err := p.document(n.Content[0]); err != nil {
			return nil, err
		}
		docs++
	}
	if docs == 0 {
		return nil, fmt.Errorf("%s: resiliency: no Resiliency document", file)
	}
	if err := p.resolveTargets(); err != nil {
		return nil, err
	}
	return s, nil
}

type parser struct {
	file    string
	s       *Spec
	targets []targetRef // checked once every document is read
}

type targetRef struct {
	what  string // "apps.orders"
	names PolicyNames
	lines [3]int
}

func (p *parser) errf(n *yaml.Node, format string, args ...any) error {
	return fmt.Errorf("%s:%d: resiliency: %s", p.file, n.Line, fmt.Sprintf(format, args...))
}

func (p *parser) wrapf(n *yaml.Node, err error, format string, args ...any) error {
	return fmt.Errorf("%s:%d: %s: %w", p.file, n.Line, fmt.Sprintf(format, args...), err)
}

// fields walks a mapping node, calling fn for each key in allowed.
func (p *parser) fields(n *yaml.Node, where string, allowed []string, fn func(key string, k, v *yaml.Node) error) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // "retries:" with nothing under it
	}
	if n.Kind != yaml.MappingNode {
		return p.errf(n, "%s: want a mapping", where)
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return p.errf(k, "%s: keys must be strings", where)
		}
		if k.Value == "<<" {
			return p.errf(k, "%s: merge keys are not supported", where)
		}
		if seen[k.Value] {
			return p.errf(k, "%s: duplicate key %q", where, k.Value)
		}
		seen[k.Value] = true
		if allowed != nil && !contains(allowed, k.Value) {
			return p.errf(k, "%s: unknown field %q (known: %s)", where, k.Value, strings.Join(allowed, ", "))
		}
		if v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		if err := fn(k.Value, k, v); err != nil {
			return err
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (p *parser) str(n *yaml.Node, where string) (string, error) {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!str" && n.Tag != "!!int" && n.Tag != "!!float") {
		return "", p.errf(n, "%s: want a string", where)
	}
	return n.Value, nil
}

func (p *parser) integer(n *yaml.Node, where string) (int, error) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
		return 0, p.errf(n, "%s: want an integer", where)
	}
	v, err := strconv.ParseInt(n.Value, 10, 32)
	if err != nil {
		return 0, p.errf(n, "%s: want a decimal integer, got %q", where, n.Value)
	}
	return int(v), nil
}

func (p *parser) float(n *yaml.Node, where string) (float64, error) {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float" && n.Tag != "!!str") {
		return 0, p.errf(n, "%s: want a number", where)
	}
	v, err := strconv.ParseFloat(n.Value, 64)
	if err != nil {
		return 0, p.errf(n, "%s: want a number, got %q", where, n.Value)
	}
	return v, nil
}

// duration parses a Go duration ("5s") or, as Dapr, a bare integer of
// milliseconds. Negative durations are errors.
func (p *parser) duration(n *yaml.Node, where string) (time.Duration, error) {
	s, err := p.str(n, where)
	if err != nil {
		return 0, err
	}
	d, err := ParseDuration(s)
	if err != nil {
		return 0, p.wrapf(n, err, "%s", where)
	}
	return d, nil
}

// ParseDuration parses a Go duration or a bare integer of milliseconds
// (Dapr's rule); negative durations are errors.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var d time.Duration
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		if i > int64(time.Duration(1<<63-1)/time.Millisecond) {
			return 0, fmt.Errorf("resiliency: duration %q too large", s)
		}
		d = time.Duration(i) * time.Millisecond
	} else if d, err = time.ParseDuration(s); err != nil {
		return 0, fmt.Errorf("resiliency: invalid duration %q (want e.g. 500ms, 5s)", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("resiliency: negative duration %q", s)
	}
	return d, nil
}

func (p *parser) document(root *yaml.Node) error {
	var apiVersion, kind string
	var spec *yaml.Node
	err := p.fields(root, "document", []string{"apiVersion", "kind", "metadata", "spec", "scopes"}, func(key string, k, v *yaml.Node) (err error) {
		switch key {
		case "apiVersion":
			apiVersion, err = p.str(v, key)
		case "kind":
			kind, err = p.str(v, key)
		case "metadata":
			err = p.fields(v, key, nil, func(mk string, _, mv *yaml.Node) error {
				if mk == "name" {
					name, err := p.str(mv, "metadata.name")
					p.s.Names = append(p.s.Names, name)
					return err
				}
				return nil
			})
		case "spec":
			spec = v
		case "scopes":
			if v.Kind != yaml.SequenceNode {
				return p.errf(v, "scopes: want a list of app IDs")
			}
			for _, e := range v.Content {
				id, err := p.str(e, "scopes")
				if err != nil {
					return err
				}
				p.s.Scopes = append(p.s.Scopes, id)
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	if apiVersion != APIVersion {
		return p.errf(root, "apiVersion %q, want %s", apiVersion, APIVersion)
	}
	if kind != Kind {
		return p.errf(root, "kind %q, want %s", kind, Kind)
	}
	if spec == nil {
		return p.errf(root, "no spec")
	}
	return p.fields(spec, "spec", []string{"policies", "targets"}, func(key string, _, v *yaml.Node) error {
		if key == "policies" {
			return p.policies(v)
		}
		return p.targetsNode(v)
	})
}

func (p *parser) policies(n *yaml.Node) error {
	return p.fields(n, "spec.policies", []string{"timeouts", "retries", "circuitBreakers"}, func(key string, _, v *yaml.Node) error {
		switch key {
		case "timeouts":
			return p.fields(v, "timeouts", nil, func(name string, k, tv *yaml.Node) error {
				if _, dup := p.s.Timeouts[name]; dup {
					return p.errf(k, "timeout policy %q defined twice", name)
				}
				d, err := p.duration(tv, "timeouts."+name)
				p.s.Timeouts[name] = d
				return err
			})
		case "retries":
			return p.fields(v, "retries", nil, func(name string, k, rv *yaml.Node) error {
				if _, dup := p.s.Retries[name]; dup {
					return p.errf(k, "retry policy %q defined twice", name)
				}
				r, err := p.retry(name, rv)
				p.s.Retries[name] = r
				return err
			})
		default:
			return p.fields(v, "circuitBreakers", nil, func(name string, k, cv *yaml.Node) error {
				if _, dup := p.s.CircuitBreakers[name]; dup {
					return p.errf(k, "circuit breaker policy %q defined twice", name)
				}
				cb, err := p.breaker(name, cv)
				p.s.CircuitBreakers[name] = cb
				return err
			})
		}
	})
}

var retryFields = []string{"policy", "duration", "maxInterval", "maxRetries", "matching",
	"initialInterval", "randomizationFactor", "multiplier", "maxElapsedTime"}

func (p *parser) retry(name string, n *yaml.Node) (*Retry, error) {
	r := &Retry{
		Name: name, Policy: PolicyConstant, Duration: 5 * time.Second,
		InitialInterval: 500 * time.Millisecond, RandomizationFactor: 0.5, Multiplier: 1.5,
		MaxInterval: 60 * time.Second, MaxRetries: -1,
	}
	where := "retries." + name
	err := p.fields(n, where, retryFields, func(key string, _, v *yaml.Node) (err error) {
		w := where + "." + key
		switch key {
		case "policy":
			if r.Policy, err = p.str(v, w); err == nil && r.Policy != PolicyConstant && r.Policy != PolicyExponential {
				err = p.errf(v, "%s: %q, want constant or exponential", w, r.Policy)
			}
		case "duration":
			r.Duration, err = p.duration(v, w)
		case "maxInterval":
			r.MaxInterval, err = p.duration(v, w)
		case "initialInterval":
			r.InitialInterval, err = p.duration(v, w)
		case "maxElapsedTime":
			r.MaxElapsedTime, err = p.duration(v, w)
		case "randomizationFactor":
			if r.RandomizationFactor, err = p.float(v, w); err == nil && !(r.RandomizationFactor >= 0 && r.RandomizationFactor <= 1) {
				err = p.errf(v, "%s: %v, want 0..1", w, r.RandomizationFactor)
			}
		case "multiplier":
			if r.Multiplier, err = p.float(v, w); err == nil && !(r.Multiplier >= 1 && r.Multiplier <= 100) {
				err = p.errf(v, "%s: %v, want 1..100", w, r.Multiplier)
			}
		case "maxRetries":
			if r.MaxRetries, err = p.integer(v, w); err == nil && r.MaxRetries < -1 {
				err = p.errf(v, "%s: %d, want -1 (unlimited) or more", w, r.MaxRetries)
			}
		case "matching":
			err = p.fields(v, w, []string{"httpStatusCodes", "gRPCStatusCodes"}, func(mk string, _, mv *yaml.Node) error {
				s, err := p.str(mv, w+"."+mk)
				if err != nil {
					return err
				}
				if mk == "httpStatusCodes" {
					r.HTTPStatusCodes, err = ParseCodes(s, MinHTTPStatus, MaxHTTPStatus)
					r.MatchHTTP = true
				} else {
					r.GRPCStatusCodes, err = ParseCodes(s, MinGRPCCode, MaxGRPCCode)
					r.MatchGRPC = true
				}
				if err != nil {
					return p.wrapf(mv, err, "%s.%s", w, mk)
				}
				return nil
			})
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if r.Policy == PolicyExponential && r.InitialInterval > r.MaxInterval {
		return nil, p.errf(n, "%s: initialInterval %s is above maxInterval %s", where, r.InitialInterval, r.MaxInterval)
	}
	r.Retries = r.MaxRetries
	if r.Retries < 0 || r.Retries > MaxRetriesCap {
		r.Retries = MaxRetriesCap
	}
	return r, nil
}

const defaultTrip = "consecutiveFailures > 5"

func (p *parser) breaker(name string, n *yaml.Node) (*BreakerPolicy, error) {
	cb := &BreakerPolicy{Name: name}
	where := "circuitBreakers." + name
	trip := defaultTrip
	tripNode := n
	err := p.fields(n, where, []string{"maxRequests", "interval", "timeout", "trip"}, func(key string, _, v *yaml.Node) (err error) {
		w := where + "." + key
		switch key {
		case "maxRequests":
			var m int
			if m, err = p.integer(v, w); err == nil && m < 0 {
				err = p.errf(v, "%s: %d, want 0 or more", w, m)
			}
			cb.MaxRequests = uint32(m)
		case "interval":
			cb.Interval, err = p.duration(v, w)
		case "timeout":
			cb.Timeout, err = p.duration(v, w)
		case "trip":
			trip, err = p.str(v, w)
			tripNode = v
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if cb.MaxRequests == 0 {
		cb.MaxRequests = 1 // gobreaker's default
	}
	if cb.Timeout == 0 {
		cb.Timeout = 60 * time.Second // gobreaker's default
	}
	if cb.Trip, err = CompileTrip(trip); err != nil {
		return nil, p.wrapf(tripNode, err, "%s.trip", where)
	}
	return cb, nil
}

func (p *parser) targetsNode(n *yaml.Node) error {
	return p.fields(n, "spec.targets", []string{"apps", "actors", "components"}, func(key string, _, v *yaml.Node) error {
		switch key {
		case "apps":
			return p.fields(v, "targets.apps", nil, func(app string, k, av *yaml.Node) error {
				if _, dup := p.s.Apps[app]; dup {
					return p.errf(k, "targets.apps.%s defined twice", app)
				}
				if err := checkAppKey(app); err != nil {
					return p.wrapf(k, err, "targets.apps")
				}
				names, err := p.names(av, "targets.apps."+app, []string{"timeout", "retry", "circuitBreaker", "circuitBreakerCacheSize"})
				p.s.Apps[app] = names
				return err
			})
		case "actors":
			return p.fields(v, "targets.actors", nil, func(actor string, _, av *yaml.Node) error {
				_, err := p.names(av, "targets.actors."+actor, []string{"timeout", "retry", "circuitBreaker", "circuitBreakerScope", "circuitBreakerCacheSize"})
				return err
			})
		default:
			return p.fields(v, "targets.components", nil, func(c string, _, cv *yaml.Node) error {
				return p.fields(cv, "targets.components."+c, []string{"inbound", "outbound"}, func(dir string, _, dv *yaml.Node) error {
					_, err := p.names(dv, "targets.components."+c+"."+dir, []string{"timeout", "retry", "circuitBreaker"})
					return err
				})
			})
		}
	})
}

// checkAppKey accepts "app" or "app.namespace".
func checkAppKey(k string) error {
	app, ns, _ := strings.Cut(k, ".")
	if app == "" || strings.Contains(ns, ".") || (strings.Contains(k, ".") && ns == "") {
		return fmt.Errorf("resiliency: invalid app target %q (want app or app.namespace)", k)
	}
	return nil
}

func (p *parser) names(n *yaml.Node, where string, allowed []string) (PolicyNames, error) {
	var names PolicyNames
	ref := targetRef{what: where}
	err := p.fields(n, where, allowed, func(key string, _, v *yaml.Node) (err error) {
		w := where + "." + key
		switch key {
		case "timeout":
			names.Timeout, err = p.str(v, w)
			ref.lines[0] = v.Line
		case "retry":
			names.Retry, err = p.str(v, w)
			ref.lines[1] = v.Line
		case "circuitBreaker":
			names.CircuitBreaker, err = p.str(v, w)
			ref.lines[2] = v.Line
		case "circuitBreakerCacheSize":
			var c int
			if c, err = p.integer(v, w); err == nil && c < 0 {
				err = p.errf(v, "%s: %d, want 0 or more", w, c)
			}
		case "circuitBreakerScope":
			var s string
			if s, err = p.str(v, w); err == nil && s != "id" && s != "type" && s != "both" {
				err = p.errf(v, "%s: %q, want id, type or both", w, s)
			}
		}
		return err
	})
	ref.names = names
	p.targets = append(p.targets, ref)
	return names, err
}

// resolveTargets checks that every policy a target names exists.
func (p *parser) resolveTargets() error {
	for _, t := range p.targets {
		if n := t.names.Timeout; n != "" {
			if _, ok := p.s.Timeouts[n]; !ok {
				return fmt.Errorf("%s:%d: resiliency: %s.timeout: no timeout policy %q", p.file, t.lines[0], t.what, n)
			}
		}
		if n := t.names.Retry; n != "" {
			if _, ok := p.s.Retries[n]; !ok {
				return fmt.Errorf("%s:%d: resiliency: %s.retry: no retry policy %q", p.file, t.lines[1], t.what, n)
			}
		}
		if n := t.names.CircuitBreaker; n != "" {
			if _, ok := p.s.CircuitBreakers[n]; !ok {
				return fmt.Errorf("%s:%d: resiliency: %s.circuitBreaker: no circuit breaker policy %q", p.file, t.lines[2], t.what, n)
			}
		}
	}
	return nil
}
