package policy

import (
	"sync"
	"sync/atomic"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/discovery"
)

// maxCachedDecisions bounds a snapshot's decision cache; when it is full,
// new decisions are evaluated but not stored.
const maxCachedDecisions = 16384

type cacheKey struct {
	caller                 certs.Identity
	dest                   discovery.Target
	protocol, method, path string
}

// decisionCache maps cacheKey to a Rego verdict. It lives in an immutable
// Snapshot, so a reload starts a fresh one; reads take no lock.
type decisionCache struct {
	m sync.Map
	n atomic.Int64
}

func (c *decisionCache) get(k *cacheKey) (string, bool) {
	v, ok := c.m.Load(*k)
	if !ok {
		return "", false
	}
	return v.(string), true
}

func (c *decisionCache) put(k *cacheKey, v string) {
	if c.n.Load() >= maxCachedDecisions {
		return
	}
	if _, loaded := c.m.LoadOrStore(*k, v); !loaded {
		c.n.Add(1)
	}
}
