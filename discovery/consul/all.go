package consul

import (
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshd/meshd/discovery"
)

var _ discovery.AllWatcher = (*resolver)(nil)

// WatchAll implements discovery.AllWatcher, for the control plane: a
// blocking query on the catalog's list of services finds every app; each
// new service name is looked up once (/v1/catalog/service/{name}) for the
// namespaces its instances carry, and each app and namespace is watched as
// a called target is (Watch). A watch that sees an instance of its app in
// another namespace starts that namespace's watch too, so a namespace that
// appears later is found without a new lookup. Watches started this way
// never end for idleness (the control plane's Updater does not report
// usage). Past maxWatches, apps are polled every PollInterval.
func (r *resolver) WatchAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.all.Load() {
		return
	}
	r.all.Store(true)
	r.wg.Add(1)
	go r.watchCatalog()
}

// watchCatalog follows the catalog's service list until Close.
func (r *resolver) watchCatalog() {
	defer r.wg.Done()
	known := map[string]bool{}
	var index uint64
	failures := 0
	for r.ctx.Err() == nil {
		q := r.q
		q.WaitIndex = index
		q.WaitTime = r.wait
		began := time.Now()
		services, meta, err := r.client.Catalog().Services(q.WithContext(r.ctx))
		if err != nil {
			if r.ctx.Err() != nil {
				return
			}
			r.agentDown(err)
			index = 0
			if !sleep(r.ctx, backoff(failures)) {
				return
			}
			failures++
			continue
		}
		failures = 0
		r.agentUp()
		if index != 0 && meta.LastIndex == index && time.Since(began) < 10*time.Millisecond {
			if !sleep(r.ctx, 100*time.Millisecond) { // an index that does not move: do not spin
				return
			}
		}
		if meta.LastIndex < index {
			index = 0
		} else {
			index = meta.LastIndex
		}
		for name := range services {
			if known[name] || name == "consul" {
				continue
			}
			entries, _, err := r.client.Catalog().Service(name, "", r.q.WithContext(r.ctx))
			if err != nil {
				if r.ctx.Err() != nil {
					return
				}
				r.agentDown(err)
				index = 0 // look again
				break
			}
			known[name] = true
			for _, ns := range namespaces(entries) {
				r.Watch(discovery.Target{AppID: name, Namespace: ns})
			}
		}
	}
}

// namespaces lists the namespaces of a service's catalog entries.
func namespaces(entries []*api.CatalogService) []string {
	seen := map[string]bool{}
	var out []string
	for _, e := range entries {
		ns := e.ServiceMeta[NamespaceMetaKey]
		if ns == "" {
			ns = discovery.DefaultNamespace
		}
		if !seen[ns] {
			seen[ns] = true
			out = append(out, ns)
		}
	}
	return out
}

// watchOtherNamespaces starts the watches of the namespaces, other than
// t's, that instances of t's app carry (WatchAll only).
func (r *resolver) watchOtherNamespaces(t discovery.Target, entries []*api.ServiceEntry) {
	for _, e := range entries {
		if e.Service == nil {
			continue
		}
		ns := e.Service.Meta[NamespaceMetaKey]
		if ns == "" {
			ns = discovery.DefaultNamespace
		}
		if ns != t.Namespace {
			r.Watch(discovery.Target{AppID: t.AppID, Namespace: ns})
		}
	}
}
