package lazyxdsctl

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the loop's own; the graph and the ALS server export theirs
// through their Collectors, registered next to these.
type metrics struct {
	sidecarWrites  *prometheus.CounterVec
	persistWrites  *prometheus.CounterVec
	persistedBytes atomic.Int64
	learnToSidecar prometheus.Histogram
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
	ch <- descPersistedBytes
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.sidecarWrites.Collect(ch)
	m.persistWrites.Collect(ch)
	m.learnToSidecar.Collect(ch)
	ch <- prometheus.MustNewConstMetric(descPersistedBytes, prometheus.GaugeValue, float64(m.persistedBytes.Load()))
}
