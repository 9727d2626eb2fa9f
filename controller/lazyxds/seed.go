package lazyxds

import (
	"strings"
	"time"
)

// SeedEdge is one caller → destination edge read from telemetry
// (istio_requests_total{reporter="source"}): the caller by its workload name
// as Istio labels it (source_workload, source_workload_namespace, which are
// the names WorkloadKey uses) and the destination as destination_service.
type SeedEdge struct {
	Workload WorkloadKey
	Service  string
}

// SeedResult counts what Seed did with a batch of edges.
type SeedResult struct {
	Added          int // new dependencies (origin telemetry)
	Refreshed      int // known dependencies, last-seen moved to the seed time
	UnknownCaller  int // no such workload, or not accepted (another policy's)
	NotLazy        int // caller not lazy
	UnknownService int // destination resolves to no known service
	NotLazyService int // destination always visible anyway (non-HTTP ports)
}

// Skipped is every edge that did not become (or refresh) a dependency.
func (r SeedResult) Skipped() int {
	return r.UnknownCaller + r.NotLazy + r.UnknownService + r.NotLazyService
}

// Seed learns dependencies from telemetry edges under one lock. Destinations
// go through the same resolution as an access log's authority (FQDN, short
// names in the caller's namespace, cluster IPs), and only lazy callers and
// lazy services count, so a seeded dependency is exactly one the access-log
// path could have learned. accept (nil: all) restricts callers, e.g. to the
// workloads of the policy whose Prometheus was queried. Known dependencies
// keep their origin; their last-seen moves to at, which keeps dependency
// expiry honest for edges that no longer reach the egress.
func (g *Graph) Seed(edges []SeedEdge, at time.Time, accept func(WorkloadKey) bool) SeedResult {
	var res SeedResult
	var buf [3]string
	ts := at.UnixNano()
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, e := range edges {
		w := g.workloads[e.Workload]
		if w == nil || (accept != nil && !accept(e.Workload)) {
			res.UnknownCaller++
			continue
		}
		if !g.isLazy(w) {
			res.NotLazy++
			continue
		}
		o := Observation{Authority: strings.ToLower(e.Service)}
		host := g.resolveLocked(&o, e.Workload.Namespace, buf[:0])
		if host == "" {
			res.UnknownService++
			continue
		}
		if !g.services[host].lazy() {
			res.NotLazyService++
			continue
		}
		if g.learnOriginLocked(e.Workload, host, ts, OriginTelemetry) {
			res.Added++
		} else {
			res.Refreshed++
		}
	}
	g.metrics.seeded.Add(uint64(res.Added))
	return res
}
