package lazyxds

import (
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Graph holds workloads, services and learned dependencies. It is safe for
// concurrent use. Mutations only mark workloads dirty; Drain computes the
// desired Sidecars once per batch, so a storm of access logs costs one write
// per changed workload per Drain.
type Graph struct {
	opts  Options
	never map[string]bool

	mu          sync.RWMutex
	workloads   map[WorkloadKey]*Workload
	byIP        map[netip.Addr]WorkloadKey
	nsWorkloads map[string]map[string]struct{}
	services    map[string]*Service
	byAddr      map[netip.Addr]string
	deps        map[WorkloadKey]map[string]depTimes
	dependents  map[string]map[WorkloadKey]struct{}
	vss         map[vsKey]*vsEntry
	vsByHost    map[string]map[vsKey]struct{}
	vsByDest    map[string]map[vsKey]struct{}

	// alwaysVisible caches "<ns>/<host>" of non-lazy services (sorted).
	alwaysVisible      []string
	alwaysVisibleStale bool

	dirty     map[WorkloadKey]int64 // first time marked dirty since the last Drain
	allDirty  int64                 // non-zero: every workload is dirty since then
	emitted   map[WorkloadKey]uint64
	metrics   *graphMetrics
	depsCount int
}

// NewGraph returns an empty graph.
func NewGraph(opts Options) *Graph {
	opts = opts.withDefaults()
	g := &Graph{
		opts:        opts,
		never:       map[string]bool{"kube-system": true, opts.RootNamespace: true},
		workloads:   map[WorkloadKey]*Workload{},
		byIP:        map[netip.Addr]WorkloadKey{},
		nsWorkloads: map[string]map[string]struct{}{},
		services:    map[string]*Service{},
		byAddr:      map[netip.Addr]string{},
		deps:        map[WorkloadKey]map[string]depTimes{},
		dependents:  map[string]map[WorkloadKey]struct{}{},
		vss:         map[vsKey]*vsEntry{},
		vsByHost:    map[string]map[vsKey]struct{}{},
		vsByDest:    map[string]map[vsKey]struct{}{},
		dirty:       map[WorkloadKey]int64{},
		emitted:     map[WorkloadKey]uint64{},
		metrics:     newGraphMetrics(),
	}
	for _, ns := range opts.NeverLazyNamespaces {
		g.never[ns] = true
	}
	return g
}

// Options returns the effective options (defaults filled in).
func (g *Graph) Options() Options { return g.opts }

func (g *Graph) isLazy(w *Workload) bool { return w != nil && w.Lazy && !g.never[w.Namespace] }

func (g *Graph) markDirty(k WorkloadKey, at int64) {
	if _, ok := g.dirty[k]; !ok {
		g.dirty[k] = at
	}
}

func (g *Graph) markAllDirty(at int64) {
	if g.allDirty == 0 {
		g.allDirty = at
	}
}

func (g *Graph) markNamespaceDirty(ns string, at int64) {
	for name := range g.nsWorkloads[ns] {
		g.markDirty(WorkloadKey{ns, name}, at)
	}
}

func (g *Graph) markDependentsDirty(host string, at int64) {
	for k := range g.dependents[host] {
		g.markDirty(k, at)
	}
}

// UpsertWorkload adds or replaces a workload, moving its IPs in the caller index.
// An IP now owned by another workload is left to that workload.
func (g *Graph) UpsertWorkload(w Workload) {
	w.Labels = maps.Clone(w.Labels)
	w.IPs = slices.Clone(w.IPs)
	k := w.Key()
	now := g.opts.Now().UnixNano()
	g.mu.Lock()
	defer g.mu.Unlock()
	if old := g.workloads[k]; old != nil {
		for _, ip := range old.IPs {
			if g.byIP[ip] == k {
				delete(g.byIP, ip)
			}
		}
		if !maps.Equal(old.Labels, w.Labels) {
			// Peers' selectors may now (not) overlap with this workload.
			g.markNamespaceDirty(k.Namespace, now)
		}
	} else {
		set := g.nsWorkloads[k.Namespace]
		if set == nil {
			set = map[string]struct{}{}
			g.nsWorkloads[k.Namespace] = set
		}
		set[k.Name] = struct{}{}
		g.markNamespaceDirty(k.Namespace, now)
	}
	for _, ip := range w.IPs {
		g.byIP[ip] = k
	}
	g.workloads[k] = &w
	g.markDirty(k, now)
}

// DeleteWorkload forgets a workload and its learned dependencies.
func (g *Graph) DeleteWorkload(k WorkloadKey) {
	now := g.opts.Now().UnixNano()
	g.mu.Lock()
	defer g.mu.Unlock()
	if old := g.workloads[k]; old != nil {
		for _, ip := range old.IPs {
			if g.byIP[ip] == k {
				delete(g.byIP, ip)
			}
		}
		delete(g.workloads, k)
		delete(g.nsWorkloads[k.Namespace], k.Name)
		if len(g.nsWorkloads[k.Namespace]) == 0 {
			delete(g.nsWorkloads, k.Namespace)
		}
		g.markNamespaceDirty(k.Namespace, now)
	}
	for host := range g.deps[k] {
		g.removeDependent(host, k)
	}
	g.depsCount -= len(g.deps[k])
	delete(g.deps, k)
	g.markDirty(k, now)
}

// Lookup returns the workload owning a pod IP.
func (g *Graph) Lookup(ip netip.Addr) (WorkloadKey, bool) {
	g.mu.RLock()
	k, ok := g.byIP[ip]
	g.mu.RUnlock()
	return k, ok
}

// UpsertService adds or replaces a service host.
func (g *Graph) UpsertService(s Service) {
	s.Host = strings.ToLower(s.Host)
	s.Ports = slices.Clone(s.Ports)
	s.Addresses = slices.Clone(s.Addresses)
	now := g.opts.Now().UnixNano()
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.services[s.Host]
	if old != nil {
		for _, a := range old.Addresses {
			if g.byAddr[a] == s.Host {
				delete(g.byAddr, a)
			}
		}
	}
	for _, a := range s.Addresses {
		g.byAddr[a] = s.Host
	}
	g.services[s.Host] = &s
	if old == nil || old.Namespace != s.Namespace || old.lazy() != s.lazy() || !slices.Equal(old.Ports, s.Ports) {
		g.serviceChanged(s.Host, old, &s, now)
	}
}

// DeleteService removes a service host and drops it from every dependency set.
func (g *Graph) DeleteService(host string) {
	host = strings.ToLower(host)
	now := g.opts.Now().UnixNano()
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.services[host]
	if old == nil {
		return
	}
	for _, a := range old.Addresses {
		if g.byAddr[a] == host {
			delete(g.byAddr, a)
		}
	}
	delete(g.services, host)
	g.serviceChanged(host, old, nil, now)
	for k := range g.dependents[host] {
		if ds := g.deps[k]; ds != nil {
			delete(ds, host)
			g.depsCount--
		}
	}
	delete(g.dependents, host)
}

func (g *Graph) serviceChanged(host string, old, cur *Service, now int64) {
	g.markDependentsDirty(host, now)
	// Callers of a VirtualService that routes to this host see it too.
	for vk := range g.vsByDest[host] {
		for _, h := range g.vss[vk].hosts {
			g.markDependentsDirty(h, now)
		}
	}
	if (old != nil && !old.lazy()) || (cur != nil && !cur.lazy()) || (old != nil && cur != nil && old.lazy() != cur.lazy()) {
		g.alwaysVisibleStale = true
		g.markAllDirty(now)
	}
}

// UpsertVirtualService adds or replaces a VirtualService.
func (g *Graph) UpsertVirtualService(vs VirtualService) {
	d := g.opts.ClusterDomain
	e := &vsEntry{ns: vs.Namespace}
	for _, h := range vs.Hosts {
		e.hosts = append(e.hosts, strings.ToLower(ResolveShortName(h, vs.Namespace, d)))
	}
	for _, h := range vs.Destinations {
		e.dests = append(e.dests, strings.ToLower(ResolveShortName(h, vs.Namespace, d)))
	}
	now := g.opts.Now().UnixNano()
	k := vsKey{vs.Namespace, vs.Name}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.removeVSLocked(k, now)
	g.vss[k] = e
	for _, h := range e.hosts {
		addToSet(g.vsByHost, h, k)
		g.markDependentsDirty(h, now)
	}
	for _, h := range e.dests {
		addToSet(g.vsByDest, h, k)
	}
}

// DeleteVirtualService removes a VirtualService.
func (g *Graph) DeleteVirtualService(namespace, name string) {
	now := g.opts.Now().UnixNano()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.removeVSLocked(vsKey{namespace, name}, now)
}

func (g *Graph) removeVSLocked(k vsKey, now int64) {
	old := g.vss[k]
	if old == nil {
		return
	}
	for _, h := range old.hosts {
		removeFromSet(g.vsByHost, h, k)
		g.markDependentsDirty(h, now)
	}
	for _, h := range old.dests {
		removeFromSet(g.vsByDest, h, k)
	}
	delete(g.vss, k)
}

func addToSet[K comparable, V comparable](m map[K]map[V]struct{}, k K, v V) {
	s := m[k]
	if s == nil {
		s = map[V]struct{}{}
		m[k] = s
	}
	s[v] = struct{}{}
}

func removeFromSet[K comparable, V comparable](m map[K]map[V]struct{}, k K, v V) {
	if s := m[k]; s != nil {
		delete(s, v)
		if len(s) == 0 {
			delete(m, k)
		}
	}
}

func (g *Graph) removeDependent(host string, k WorkloadKey) { removeFromSet(g.dependents, host, k) }

// HTTPPorts returns the distinct HTTP port numbers of lazy services, plus 80:
// the lazy egress Service exposes them all so every lazy workload keeps an
// HTTP route configuration (and its catch-all) on each of them.
func (g *Graph) HTTPPorts() []uint32 {
	g.mu.RLock()
	defer g.mu.RUnlock()
	set := map[uint32]struct{}{80: {}}
	for _, s := range g.services {
		if s.lazy() {
			for _, p := range s.Ports {
				set[p.Number] = struct{}{}
			}
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// ServiceEntryHosts returns the lazy ServiceEntry hosts, sorted; the redirect
// must recognise them because their names are not under the mesh DNS suffix.
func (g *Graph) ServiceEntryHosts() []string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	var out []string
	for _, s := range g.services {
		if s.ServiceEntry && s.lazy() {
			out = append(out, s.Host)
		}
	}
	sort.Strings(out)
	return out
}

// Namespaces returns the namespaces that have Kubernetes services, sorted; the
// redirect recognises "<name>.<namespace>" authorities for them.
func (g *Graph) Namespaces() []string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	set := map[string]struct{}{}
	for _, s := range g.services {
		if !s.ServiceEntry {
			set[s.Namespace] = struct{}{}
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// LazyPorts returns the port numbers of a lazy service (ok false: unknown or
// always visible).
func (g *Graph) LazyPorts(host string) ([]uint32, bool) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	s := g.services[strings.ToLower(host)]
	if s == nil || !s.lazy() {
		return nil, false
	}
	out := make([]uint32, len(s.Ports))
	for i, p := range s.Ports {
		out[i] = p.Number
	}
	return out, true
}
