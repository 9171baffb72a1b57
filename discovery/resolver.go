package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// LocalInstance describes the sidecar that builds the resolver, for backends
// that register it (mdns, consul). Its zero value means "register nothing".
type LocalInstance struct {
	// Target is the local app ID and namespace.
	Target Target
	// Address is host:port of the local sidecar's internal (mTLS) port.
	Address string
	// HealthURL is the local sidecar's health endpoint, for backends that
	// register a health check (consul): it answers 2xx while the sidecar is
	// ready and its app is healthy (when app health checks are on), an
	// error status otherwise. "" when the sidecar serves none.
	HealthURL string
}

// BuildOptions are given to Builder.Build. New fields may be added; a
// backend ignores those it does not use.
type BuildOptions struct {
	// ConfigFile is the --resolver-config file ("" if none was given).
	ConfigFile string
	// Logger receives the backend's logs; nil means slog.Default().
	Logger *slog.Logger
	// Local is the instance to register, if the backend registers.
	Local LocalInstance
	// ReadOnly builds a resolver that only reads (meshctl list): it
	// registers nothing, whatever its configuration says (consul's
	// selfRegister).
	ReadOnly bool
	// SVIDSource and BundleSource are the sidecar's rotating identity and
	// trust bundle, for backends that reach their source over mTLS (xds).
	// Both nil with --insecure.
	SVIDSource   x509svid.Source
	BundleSource x509bundle.Source
}

// Updater receives the state a Resolver watches. The Cache implements it;
// backends never implement it. A backend always pushes complete sets: the
// endpoints it gives for a target replace the ones it gave before.
//
// All methods are safe for concurrent use, copy their arguments and return
// quickly (no network, no blocking on readers).
type Updater interface {
	// UpdateTarget replaces the endpoints of one target. An empty eps keeps
	// the target known with no endpoints (Pick: ErrNoHealthyEndpoint).
	UpdateTarget(t Target, eps []Endpoint)
	// RemoveTarget forgets a target (Pick: ErrUnknownTarget).
	RemoveTarget(t Target)
	// ReplaceAll replaces the whole state at once: targets missing from all
	// are forgotten. Readers see the old state or the new one, never a mix.
	ReplaceAll(all map[Target][]Endpoint)
	// SetHealth marks one endpoint healthy or not, for backends that carry
	// health (Consul checks, EndpointSlice conditions). New endpoints start
	// healthy. Unknown targets and addresses are ignored.
	SetHealth(t Target, addr string, healthy bool)
	// ReportError tells that the backend could not refresh its state (a
	// bad file, a lost watch). The last good state stays in force.
	ReportError(err error)
}

// Resolver is a running backend: it watches its source and pushes into the
// Updater it was built with until Close.
type Resolver interface {
	// Close stops the watch and releases the backend's resources (and
	// deregisters the local instance, if it was registered). It is safe to
	// call more than once.
	Close() error
}

// Builder makes Resolvers of one kind. Backends register a Builder in init().
type Builder interface {
	// Name is the --resolver value that selects this backend ("static").
	Name() string
	// Build starts a resolver that pushes into u. It returns after the first
	// complete state has been pushed (so the Cache is ready when the sidecar
	// starts serving), or with an error, in which case nothing keeps running.
	// ctx bounds Build itself; the resolver then runs until Close.
	Build(ctx context.Context, opts BuildOptions, u Updater) (Resolver, error)
}

var (
	registryMu sync.RWMutex
	registry   = map[string]Builder{}
)

// Register makes b available under b.Name(). It is meant to be called from
// a backend's init(); it panics on an empty name or a name registered twice,
// since either is a programming error.
func Register(b Builder) {
	name := b.Name()
	if name == "" {
		panic("discovery: Register with an empty name")
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("discovery: Register called twice for " + name)
	}
	registry[name] = b
}

// Get returns the Builder registered under name, or nil.
func Get(name string) Builder {
	registryMu.RLock()
	defer registryMu.RUnlock()
	return registry[name]
}

// Names returns the registered backend names, sorted.
func Names() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Build looks up the backend called name and builds it, pushing into u. An
// unknown name gives an error that lists the registered ones. A Cache
// builds its backend with Cache.Build, which also wires an on-demand
// backend (a Watcher) to it.
func Build(ctx context.Context, name string, opts BuildOptions, u Updater) (Resolver, error) {
	b := Get(name)
	if b == nil {
		return nil, fmt.Errorf("discovery: unknown resolver %q (registered: %v)", name, Names())
	}
	r, err := b.Build(ctx, opts, u)
	if err != nil {
		return nil, fmt.Errorf("discovery: resolver %q: %w", name, err)
	}
	return r, nil
}

// Build builds the backend called name (see discovery.Build) into c. When
// the Resolver resolves targets on demand (it is a Watcher), c asks it to
// watch the targets Pick does not know (SetWatcher).
func (c *Cache) Build(ctx context.Context, name string, opts BuildOptions) (Resolver, error) {
	r, err := Build(ctx, name, opts, c)
	if err != nil {
		return nil, err
	}
	if w, ok := r.(Watcher); ok {
		c.SetWatcher(w)
	}
	return r, nil
}
