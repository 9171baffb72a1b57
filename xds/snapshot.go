package xds

import (
	"encoding/hex"
	"hash/fnv"
	"sort"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// snapshot is what one namespace's clients see: go-control-plane's
// ResourceSnapshot over any type URL (its own Snapshot knows only the
// envoy types, not meshd's PolicySet). It is immutable once built. Each
// resource carries its own version (delta xDS); a type's version (state of
// the world) is a hash of its resources' names and versions, so it moves
// only when what the namespace sees of that type changes.
type snapshot struct {
	types map[string]*typeSet
}

type typeSet struct {
	version   string
	items     map[string]types.ResourceWithTTL
	resources map[string]types.Resource
	versions  map[string]string
}

var _ cachev3.ResourceSnapshot = (*snapshot)(nil)

// snapshotBuilder collects one namespace's resources.
type snapshotBuilder struct{ byType map[string][]named }

type named struct {
	name string
	v    versioned
}

func (b *snapshotBuilder) add(typeURL, name string, v versioned) {
	if b.byType == nil {
		b.byType = map[string][]named{}
	}
	b.byType[typeURL] = append(b.byType[typeURL], named{name, v})
}

// build makes the snapshot; every type URL of typeURLs is present, empty
// or not, so a client watching it gets an answer.
func (b *snapshotBuilder) build(typeURLs []string) *snapshot {
	s := &snapshot{types: make(map[string]*typeSet, len(typeURLs))}
	for _, tu := range typeURLs {
		ns := b.byType[tu]
		sort.Slice(ns, func(i, j int) bool { return ns[i].name < ns[j].name })
		ts := &typeSet{
			items:     make(map[string]types.ResourceWithTTL, len(ns)),
			resources: make(map[string]types.Resource, len(ns)),
			versions:  make(map[string]string, len(ns)),
		}
		h := fnv.New64a()
		for _, n := range ns {
			ts.items[n.name] = types.ResourceWithTTL{Resource: n.v.res}
			ts.resources[n.name] = n.v.res
			ts.versions[n.name] = n.v.version
			h.Write([]byte(n.name))
			h.Write([]byte{0})
			h.Write([]byte(n.v.version))
			h.Write([]byte{0})
		}
		ts.version = hex.EncodeToString(h.Sum(nil))
		s.types[tu] = ts
	}
	return s
}

// same reports whether s and o serve the same versions of every type.
func (s *snapshot) same(o *snapshot) bool {
	if o == nil || len(s.types) != len(o.types) {
		return false
	}
	for tu, ts := range s.types {
		if ot := o.types[tu]; ot == nil || ot.version != ts.version {
			return false
		}
	}
	return true
}

// GetVersion implements cachev3.ResourceSnapshot.
func (s *snapshot) GetVersion(typeURL string) string {
	if ts := s.types[typeURL]; ts != nil {
		return ts.version
	}
	return ""
}

// GetResourcesAndTTL implements cachev3.ResourceSnapshot.
func (s *snapshot) GetResourcesAndTTL(typeURL string) map[string]types.ResourceWithTTL {
	if ts := s.types[typeURL]; ts != nil {
		return ts.items
	}
	return nil
}

// GetResources implements cachev3.ResourceSnapshot.
func (s *snapshot) GetResources(typeURL string) map[string]types.Resource {
	if ts := s.types[typeURL]; ts != nil {
		return ts.resources
	}
	return nil
}

// ConstructVersionMap implements cachev3.ResourceSnapshot: the versions are
// made with the snapshot.
func (s *snapshot) ConstructVersionMap() error { return nil }

// GetVersionMap implements cachev3.ResourceSnapshot.
func (s *snapshot) GetVersionMap(typeURL string) map[string]string {
	if ts := s.types[typeURL]; ts != nil {
		return ts.versions
	}
	return nil
}
