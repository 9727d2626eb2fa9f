package lazyxdsctl

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leanmesh/leanmesh/controller/lazyxds"
	"github.com/leanmesh/leanmesh/controller/lazyxds/seed"
)

// metrics are the loop's own; the graph and the ALS server export theirs
// through their Collectors, registered next to these.
type metrics struct {
	sidecarWrites  *prometheus.CounterVec
	persistWrites  *prometheus.CounterVec
	persistedBytes atomic.Int64
	learnToSidecar prometheus.Histogram
	seedQueries    *prometheus.CounterVec
	seedDuration   prometheus.Histogram
	seedEdges      *prometheus.CounterVec
}

var descPersistedBytes = prometheus.NewDesc("leanmesh_lazyxds_snapshot_bytes",
	"Size of the last persisted dependency snapshot (gzipped).", nil, nil)

func newMetrics() *metrics {
	return &metrics{
		sidecarWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leanmesh_lazyxds_sidecar_writes_total",
			Help: "Sidecar writes by result (applied, deleted, failed).",
		}, []string{"result"}),
		persistWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leanmesh_lazyxds_snapshot_writes_total",
			Help: "Snapshot ConfigMap writes by result (written, failed).",
		}, []string{"result"}),
		learnToSidecar: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "leanmesh_lazyxds_learn_to_sidecar_seconds",
			Help:    "Time from the first access log of a new dependency to the Sidecar carrying it being written.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 12), // 50ms … ~100s
		}),
		seedQueries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leanmesh_lazyxds_seed_queries_total",
			Help: "Telemetry seed queries (seedFromTelemetry) by result (ok, truncated, failed).",
		}, []string{"result"}),
		seedDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "leanmesh_lazyxds_seed_query_seconds",
			Help:    "Duration of telemetry seed queries.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14), // 10ms … ~80s
		}),
		seedEdges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leanmesh_lazyxds_seed_edges_total",
			Help: "Edges returned by telemetry seed queries, by what became of them (added, refreshed, unknown_caller, not_lazy, unknown_service, not_lazy_service).",
		}, []string{"result"}),
	}
}

func (m *metrics) seedQuery(err error, res seed.Result, applied lazyxds.SeedResult) {
	m.seedDuration.Observe(res.Took.Seconds())
	switch {
	case err != nil:
		m.seedQueries.WithLabelValues("failed").Inc()
		return
	case res.Truncated:
		m.seedQueries.WithLabelValues("truncated").Inc()
	default:
		m.seedQueries.WithLabelValues("ok").Inc()
	}
	for r, n := range map[string]int{"added": applied.Added, "refreshed": applied.Refreshed, "unknown_caller": applied.UnknownCaller,
		"not_lazy": applied.NotLazy, "unknown_service": applied.UnknownService, "not_lazy_service": applied.NotLazyService} {
		m.seedEdges.WithLabelValues(r).Add(float64(n))
	}
}

func (m *metrics) sidecar(result string) { m.sidecarWrites.WithLabelValues(result).Inc() }

func (m *metrics) persist(result string, size int) {
	m.persistWrites.WithLabelValues(result).Inc()
	m.persistedBytes.Store(int64(size))
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.sidecarWrites.Describe(ch)
	m.persistWrites.Describe(ch)
	m.learnToSidecar.Describe(ch)
	m.seedQueries.Describe(ch)
	m.seedDuration.Describe(ch)
	m.seedEdges.Describe(ch)
	ch <- descPersistedBytes
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.sidecarWrites.Collect(ch)
	m.persistWrites.Collect(ch)
	m.learnToSidecar.Collect(ch)
	m.seedQueries.Collect(ch)
	m.seedDuration.Collect(ch)
	m.seedEdges.Collect(ch)
	ch <- prometheus.MustNewConstMetric(descPersistedBytes, prometheus.GaugeValue, float64(m.persistedBytes.Load()))
}
