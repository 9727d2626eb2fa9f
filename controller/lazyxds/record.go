package lazyxds

import (
	"net/netip"
	"sort"
	"strings"
	"time"
)

// Recording: access-log observations (and other sources) become learned
// dependencies. Only workloads are marked dirty here; Drain renders.

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
	return g.learnOriginLocked(k, host, at, OriginAccessLog)
}

func (g *Graph) learnOriginLocked(k WorkloadKey, host string, at int64, origin Origin) bool {
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
	ds[host] = depTimes{first: at, last: at, origin: origin}
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
		out = append(out, Dependency{Host: h, FirstSeen: time.Unix(0, t.first).UTC(), LastSeen: time.Unix(0, t.last).UTC(), Origin: t.origin})
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
