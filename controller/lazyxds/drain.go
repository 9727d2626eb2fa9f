package lazyxds

import (
	"hash/fnv"
	"maps"
	"slices"
	"sort"
)

// Draining: dirty workloads become Sidecar changes, once per batch.

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
