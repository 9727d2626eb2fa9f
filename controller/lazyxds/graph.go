package lazyxds

import (
	"hash/fnv"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// WorkloadKey names a workload (a Deployment, StatefulSet, … — not a pod).
type WorkloadKey struct {
	Namespace string
	Name      string
}

func (k WorkloadKey) String() string { return k.Namespace + "/" + k.Name }

// Workload is what the graph needs to know about one workload.
type Workload struct {
	Namespace string
	Name      string
	// Labels are the pod template labels; the Sidecar selects on them.
	Labels map[string]string
	// IPs are the current pod IPs; callers are found by them.
	IPs []netip.Addr
	// Lazy is the policy decision for this workload (the reconciler's job);
	// Options.NeverLazyNamespaces overrides it.
	Lazy bool
}

func (w Workload) Key() WorkloadKey { return WorkloadKey{w.Namespace, w.Name} }

// Port is one service port.
type Port struct {
	Number uint32
	HTTP   bool
}

// Service is a Kubernetes Service or one host of a ServiceEntry.
type Service struct {
	// Namespace is where the Service/ServiceEntry lives: the "<ns>/" of Sidecar hosts.
	Namespace string
	// Host is the FQDN ("reviews.bookinfo.svc.cluster.local" or "api.example.com").
	Host         string
	Ports        []Port
	Addresses    []netip.Addr // cluster IPs / ServiceEntry addresses, for IP authorities
	ServiceEntry bool
}

// lazy reports whether the service can be hidden until first use: every port
// must be HTTP, because only HTTP traffic reaches the catch-all route that
// redirects to the egress. Anything else stays visible to everyone.
func (s *Service) lazy() bool {
	if len(s.Ports) == 0 {
		return false
	}
	for _, p := range s.Ports {
		if !p.HTTP {
			return false
		}
	}
	return true
}

// VirtualService is the part of an Istio VirtualService that changes visibility:
// a caller that depends on one of Hosts must also see every Destinations host.
type VirtualService struct {
	Namespace    string
	Name         string
	Hosts        []string // as written; short names are resolved in Namespace
	Destinations []string // route destination hosts, as written
}

// Dependency is one learned edge workload → service host.
type Dependency struct {
	Host      string
	FirstSeen time.Time
	LastSeen  time.Time
}

// Observation is one access-log entry reduced to what the graph needs.
type Observation struct {
	Caller    netip.Addr // downstream remote IP at the egress
	PeerIP    netip.Addr // caller IP from peer metadata, used when Caller is unknown
	Cluster   string     // upstream_cluster, "outbound|port|subset|fqdn"
	Authority string     // request authority, used when Cluster is not usable
	At        time.Time
}

// RecordResult counts what Record did with a batch.
type RecordResult struct {
	Learned        int // new dependencies
	Refreshed      int // known dependencies, last-seen updated
	UnknownCaller  int // no workload owns the caller IP
	UnknownService int // neither cluster nor authority names a known service
	NotLazy        int // caller is not lazy (or in a never-lazy namespace)
}

// Options configure a Graph. Zero values get the documented defaults.
type Options struct {
	ClusterDomain string // default "cluster.local"
	RootNamespace string // default "istio-system"; "<root>/*" is in every Sidecar
	// EgressHost is the lazy egress gateway as a Sidecar host,
	// default "istio-system/leanmesh-lazy-egress.istio-system.svc.cluster.local".
	EgressHost string
	// ExtraHosts are Sidecar hosts ("ns/host") every lazy workload always sees.
	ExtraHosts []string
	// NeverLazyNamespaces never get a Sidecar; kube-system and RootNamespace are always included.
	NeverLazyNamespaces []string
	// Expiry drops dependencies not seen for this long; 0 keeps them forever.
	// Note that once a dependency is visible its traffic bypasses the egress,
	// so only other sources of Record (or re-learning after expiry) refresh it.
	Expiry time.Duration
	Now    func() time.Time
}

func (o Options) withDefaults() Options {
	if o.ClusterDomain == "" {
		o.ClusterDomain = "cluster.local"
	}
	if o.RootNamespace == "" {
		o.RootNamespace = "istio-system"
	}
	if o.EgressHost == "" {
		o.EgressHost = o.RootNamespace + "/" + DefaultEgressName + "." + o.RootNamespace + ".svc." + o.ClusterDomain
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// SidecarInput is everything RenderSidecar needs for one workload.
type SidecarInput struct {
	Workload Workload
	// Peers are the other workloads of the namespace; the selector must not match them.
	Peers []Workload
	// Hosts are the Sidecar egress hosts, sorted and unique.
	Hosts []string
	// Deps are the learned dependencies, sorted by host.
	Deps []Dependency
}

// SidecarChange is one entry of Drain: write Input's Sidecar, or delete it.
type SidecarChange struct {
	Workload WorkloadKey
	Delete   bool
	Input    SidecarInput // zero when Delete
}

type depTimes struct{ first, last int64 } // unix nanoseconds

type vsKey struct{ ns, name string }

type vsEntry struct {
	ns    string
	hosts []string // FQDNs
	dests []string // FQDNs
}

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

// Record applies a batch of observations under one lock and learns new
// dependencies. It is the hot path of access-log ingestion.
func (g *Graph) Record(batch []Observation) RecordResult {
	var res RecordResult
	var buf [3]string
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := range batch {
		o := &batch[i]
		k, ok := g.byIP[o.Caller]
		if !ok && o.PeerIP.IsValid() {
			k, ok = g.byIP[o.PeerIP]
		}
		if !ok {
			res.UnknownCaller++
			continue
		}
		if !g.isLazy(g.workloads[k]) {
			res.NotLazy++
			continue
		}
		host := g.resolveLocked(o, k.Namespace, buf[:0])
		if host == "" {
			res.UnknownService++
			continue
		}
		if g.learnLocked(k, host, o.At.UnixNano()) {
			res.Learned++
		} else {
			res.Refreshed++
		}
	}
	g.metrics.learned.Add(uint64(res.Learned))
	return res
}

// resolveLocked finds the service host an observation went to: the upstream
// cluster when it names a known service, else the authority resolved the way
// the caller's DNS search path would.
func (g *Graph) resolveLocked(o *Observation, callerNS string, buf []string) string {
	if h, _, ok := ParseCluster(o.Cluster); ok {
		if _, known := g.services[h]; known {
			return h
		}
	}
	host, _, ok := SplitAuthority(o.Authority)
	if !ok {
		return ""
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return g.byAddr[a]
	}
	for _, c := range candidateFQDNs(host, callerNS, g.opts.ClusterDomain, buf) {
		if _, known := g.services[c]; known {
			return c
		}
	}
	return ""
}

func (g *Graph) learnLocked(k WorkloadKey, host string, at int64) bool {
	ds := g.deps[k]
	if ds == nil {
		ds = map[string]depTimes{}
		g.deps[k] = ds
	}
	if t, ok := ds[host]; ok {
		if at > t.last {
			t.last = at
			ds[host] = t
		}
		return false
	}
	ds[host] = depTimes{at, at}
	g.depsCount++
	addToSet(g.dependents, host, k)
	g.markDirty(k, at)
	return true
}

// Learn records one dependency directly (tests, other sources of truth).
// It returns true when the dependency is new.
func (g *Graph) Learn(k WorkloadKey, host string, at time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	added := g.learnLocked(k, strings.ToLower(host), at.UnixNano())
	if added {
		g.metrics.learned.Add(1)
	}
	return added
}

// Dependencies returns a workload's learned dependencies sorted by host.
func (g *Graph) Dependencies(k WorkloadKey) []Dependency {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return depsOf(g.deps[k])
}

func depsOf(ds map[string]depTimes) []Dependency {
	out := make([]Dependency, 0, len(ds))
	for h, t := range ds {
		out = append(out, Dependency{Host: h, FirstSeen: time.Unix(0, t.first).UTC(), LastSeen: time.Unix(0, t.last).UTC()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out
}

// expireLocked drops dependencies last seen before cutoff.
func (g *Graph) expireLocked(now int64) {
	cutoff := now - int64(g.opts.Expiry)
	for k, ds := range g.deps {
		for h, t := range ds {
			if t.last < cutoff {
				delete(ds, h)
				g.depsCount--
				g.removeDependent(h, k)
				g.markDirty(k, now)
			}
		}
	}
}

// SidecarInput returns the inputs of a workload's Sidecar; ok is false when
// the workload should have none (unknown or not lazy).
func (g *Graph) SidecarInput(k WorkloadKey) (SidecarInput, bool) {
	g.mu.Lock() // may refresh the always-visible cache
	defer g.mu.Unlock()
	return g.sidecarInputLocked(k)
}

func (g *Graph) sidecarInputLocked(k WorkloadKey) (SidecarInput, bool) {
	w := g.workloads[k]
	if !g.isLazy(w) {
		return SidecarInput{}, false
	}
	in := SidecarInput{Workload: *w, Deps: depsOf(g.deps[k])}
	for name := range g.nsWorkloads[k.Namespace] {
		if name != k.Name {
			in.Peers = append(in.Peers, *g.workloads[WorkloadKey{k.Namespace, name}])
		}
	}
	sort.Slice(in.Peers, func(i, j int) bool { return in.Peers[i].Name < in.Peers[j].Name })

	set := map[string]struct{}{g.opts.RootNamespace + "/*": {}, g.opts.EgressHost: {}}
	for _, h := range g.opts.ExtraHosts {
		set[h] = struct{}{}
	}
	for _, d := range in.Deps {
		s := g.services[d.Host]
		if s == nil {
			continue // restored before the service was seen, or pending deletion
		}
		set[s.Namespace+"/"+s.Host] = struct{}{}
		for vk := range g.vsByHost[d.Host] {
			vs := g.vss[vk]
			// The VirtualService itself is only imported if its namespace is visible for the host.
			set[vs.ns+"/"+d.Host] = struct{}{}
			for _, dest := range vs.dests {
				if ds := g.services[dest]; ds != nil {
					set[ds.Namespace+"/"+dest] = struct{}{}
				} else {
					set["*/"+dest] = struct{}{}
				}
			}
		}
	}
	always := g.alwaysVisibleLocked()
	in.Hosts = make([]string, 0, len(set)+len(always))
	for h := range set {
		in.Hosts = append(in.Hosts, h)
	}
	for _, h := range always {
		if _, dup := set[h]; !dup {
			in.Hosts = append(in.Hosts, h)
		}
	}
	sort.Strings(in.Hosts)
	return in, true
}

func (g *Graph) alwaysVisibleLocked() []string {
	if !g.alwaysVisibleStale && g.alwaysVisible != nil {
		return g.alwaysVisible
	}
	out := []string{}
	for _, s := range g.services {
		if !s.lazy() {
			out = append(out, s.Namespace+"/"+s.Host)
		}
	}
	sort.Strings(out)
	g.alwaysVisible, g.alwaysVisibleStale = out, false
	return out
}

// Drain returns the workloads whose desired Sidecar changed since the last
// Drain (expiring old dependencies first when Options.Expiry is set) and
// records them as emitted. Changes are sorted by workload.
// If applying a change fails, call Resync so the next Drain repeats it.
func (g *Graph) Drain() []SidecarChange {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.opts.Now().UnixNano()
	if g.opts.Expiry > 0 {
		g.expireLocked(now)
	}
	if g.allDirty != 0 {
		for k := range g.workloads {
			g.markDirty(k, g.allDirty)
		}
		for k := range g.emitted {
			g.markDirty(k, g.allDirty)
		}
		g.allDirty = 0
	}
	var out []SidecarChange
	for k, since := range g.dirty {
		in, ok := g.sidecarInputLocked(k)
		if !ok {
			if _, had := g.emitted[k]; had {
				delete(g.emitted, k)
				out = append(out, SidecarChange{Workload: k, Delete: true})
				g.metrics.observeFlush(now - since)
			}
			continue
		}
		h := in.fingerprint()
		if prev, had := g.emitted[k]; had && prev == h {
			continue
		}
		g.emitted[k] = h
		out = append(out, SidecarChange{Workload: k, Input: in})
		g.metrics.observeFlush(now - since)
	}
	clear(g.dirty)
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Workload, out[j].Workload
		return a.Namespace < b.Namespace || a.Namespace == b.Namespace && a.Name < b.Name
	})
	return out
}

// Resync forgets what was emitted for these workloads so the next Drain
// returns them again (after a failed apply, or at start-up).
func (g *Graph) Resync(keys ...WorkloadKey) {
	now := g.opts.Now().UnixNano()
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, k := range keys {
		delete(g.emitted, k)
		g.markDirty(k, now)
	}
}

// fingerprint identifies the rendered Sidecar: selector, hosts and whether
// the selector is refused (peers can flip that).
func (in SidecarInput) fingerprint() uint64 {
	h := fnv.New64a()
	for _, k := range slices.Sorted(maps.Keys(in.Workload.Labels)) {
		h.Write([]byte(k))
		h.Write([]byte{'='})
		h.Write([]byte(in.Workload.Labels[k]))
		h.Write([]byte{0})
	}
	h.Write([]byte{1})
	for _, s := range in.Hosts {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	if _, err := SelectorFor(in); err != nil {
		h.Write([]byte(err.Error()))
	}
	return h.Sum64()
}

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

// DropUnknown removes dependencies whose workload or service is unknown. Call
// it once informers have synced after Restore: the snapshot may name objects
// deleted while the controller was down. It returns how many were dropped.
func (g *Graph) DropUnknown() int {
	now := g.opts.Now().UnixNano()
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for k, ds := range g.deps {
		_, wknown := g.workloads[k]
		for h := range ds {
			if _, sknown := g.services[h]; wknown && sknown {
				continue
			}
			delete(ds, h)
			g.removeDependent(h, k)
			g.depsCount--
			n++
			g.markDirty(k, now)
		}
		if len(ds) == 0 {
			delete(g.deps, k)
		}
	}
	return n
}
