package lazyxds

import "time"

// ExpireWorkload drops k's dependencies last seen before cutoff and returns
// how many went. The reconciler calls it per policy (LazyXDS
// dependencyExpiry), which Options.Expiry — one value for the whole graph —
// cannot express.
func (g *Graph) ExpireWorkload(k WorkloadKey, cutoff time.Time) int {
	c := cutoff.UnixNano()
	now := g.opts.Now().UnixNano()
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	ds := g.deps[k]
	for h, t := range ds {
		if t.last < c {
			delete(ds, h)
			g.depsCount--
			g.removeDependent(h, k)
			n++
		}
	}
	if n > 0 {
		if len(ds) == 0 {
			delete(g.deps, k)
		}
		g.markDirty(k, now)
	}
	return n
}
