package lazyxds

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// GraphStats is a point-in-time copy of the graph's self-metrics.
type GraphStats struct {
	Workloads    int
	Services     int
	Dependencies int
	// SeededDependencies are the Dependencies whose origin is telemetry.
	SeededDependencies int
	// Learned counts dependencies learned from access logs since start
	// (restores excluded); Seeded those learned from telemetry.
	Learned uint64
	Seeded  uint64
	// SidecarChanges counts changes returned by Drain.
	SidecarChanges uint64
	// FlushLatencySum/Max: time from the first observation that dirtied a
	// workload to the Drain that emitted its change.
	FlushLatencySum time.Duration
	FlushLatencyMax time.Duration
}

type graphMetrics struct {
	learned atomic.Uint64
	seeded  atomic.Uint64
	changes atomic.Uint64
	latSum  atomic.Int64
	latMax  atomic.Int64
	latHist prometheus.Histogram
}

func newGraphMetrics() *graphMetrics {
	return &graphMetrics{latHist: prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "leanmesh_lazyxds_flush_latency_seconds",
		Help:    "Time from the first access log that changed a workload's Sidecar to the Drain that emitted it.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 14), // 10ms … ~80s
	})}
}

func (m *graphMetrics) observeFlush(ns int64) {
	if ns < 0 {
		ns = 0
	}
	m.changes.Add(1)
	m.latSum.Add(ns)
	for {
		cur := m.latMax.Load()
		if ns <= cur || m.latMax.CompareAndSwap(cur, ns) {
			break
		}
	}
	m.latHist.Observe(time.Duration(ns).Seconds())
}

// Stats returns the graph's self-metrics.
func (g *Graph) Stats() GraphStats {
	g.mu.RLock()
	s := GraphStats{Workloads: len(g.workloads), Services: len(g.services), Dependencies: g.depsCount}
	for _, ds := range g.deps {
		for _, t := range ds {
			if t.origin == OriginTelemetry {
				s.SeededDependencies++
			}
		}
	}
	g.mu.RUnlock()
	s.Learned = g.metrics.learned.Load()
	s.Seeded = g.metrics.seeded.Load()
	s.SidecarChanges = g.metrics.changes.Load()
	s.FlushLatencySum = time.Duration(g.metrics.latSum.Load())
	s.FlushLatencyMax = time.Duration(g.metrics.latMax.Load())
	return s
}

var (
	descLearned = prometheus.NewDesc("leanmesh_lazyxds_dependencies_learned_total",
		"Dependencies learned, by origin (access_log: a call through the egress; telemetry: seedFromTelemetry).", []string{"origin"}, nil)
	descDeps = prometheus.NewDesc("leanmesh_lazyxds_dependencies",
		"Dependencies held by the graph, by origin.", []string{"origin"}, nil)
	descChanges = prometheus.NewDesc("leanmesh_lazyxds_sidecar_changes_total",
		"Sidecar changes returned by Drain.", nil, nil)
	descObjects = prometheus.NewDesc("leanmesh_lazyxds_graph_objects",
		"Objects held by the dependency graph.", []string{"kind"}, nil)
)

// Collector exports the graph's metrics; register it with the controller's registry.
func (g *Graph) Collector() prometheus.Collector { return graphCollector{g} }

type graphCollector struct{ g *Graph }

func (c graphCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descLearned
	ch <- descDeps
	ch <- descChanges
	ch <- descObjects
	c.g.metrics.latHist.Describe(ch)
}

func (c graphCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.g.Stats()
	ch <- prometheus.MustNewConstMetric(descLearned, prometheus.CounterValue, float64(s.Learned), OriginAccessLog.String())
	ch <- prometheus.MustNewConstMetric(descLearned, prometheus.CounterValue, float64(s.Seeded), OriginTelemetry.String())
	ch <- prometheus.MustNewConstMetric(descDeps, prometheus.GaugeValue, float64(s.Dependencies-s.SeededDependencies), OriginAccessLog.String())
	ch <- prometheus.MustNewConstMetric(descDeps, prometheus.GaugeValue, float64(s.SeededDependencies), OriginTelemetry.String())
	ch <- prometheus.MustNewConstMetric(descChanges, prometheus.CounterValue, float64(s.SidecarChanges))
	ch <- prometheus.MustNewConstMetric(descObjects, prometheus.GaugeValue, float64(s.Workloads), "workload")
	ch <- prometheus.MustNewConstMetric(descObjects, prometheus.GaugeValue, float64(s.Services), "service")
	ch <- prometheus.MustNewConstMetric(descObjects, prometheus.GaugeValue, float64(s.Dependencies), "dependency")
	c.g.metrics.latHist.Collect(ch)
}
