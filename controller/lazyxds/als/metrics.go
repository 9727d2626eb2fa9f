package als

import "github.com/prometheus/client_golang/prometheus"

var (
	descStreams  = prometheus.NewDesc("leanmesh_lazyxds_als_streams_total", "ALS streams accepted.", nil, nil)
	descReceived = prometheus.NewDesc("leanmesh_lazyxds_als_entries_received_total", "HTTP access-log entries received.", nil, nil)
	descLearned  = prometheus.NewDesc("leanmesh_lazyxds_als_dependencies_learned_total", "Dependencies learned from access logs.", nil, nil)
	descDropped  = prometheus.NewDesc("leanmesh_lazyxds_als_entries_dropped_total",
		"Access-log entries that did not become a dependency, by reason.", []string{"reason"}, nil)
	descRefused = prometheus.NewDesc("leanmesh_lazyxds_als_refused_total",
		"Connections, streams or messages refused before their entries were read, by reason.", []string{"reason"}, nil)
	descActive = prometheus.NewDesc("leanmesh_lazyxds_als_streams_active", "ALS streams open now.", nil, nil)
)

// Collector exports the server's counters; the hot path only touches atomics.
func (s *Server) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Server }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descStreams
	ch <- descReceived
	ch <- descLearned
	ch <- descDropped
	ch <- descRefused
	ch <- descActive
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	ch <- prometheus.MustNewConstMetric(descStreams, prometheus.CounterValue, float64(s.streams.Load()))
	ch <- prometheus.MustNewConstMetric(descReceived, prometheus.CounterValue, float64(s.received.Load()))
	ch <- prometheus.MustNewConstMetric(descLearned, prometheus.CounterValue, float64(s.learned.Load()))
	for r := range numReasons {
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(s.dropped[r].Load()), r.String())
	}
	for r := range numRefusals {
		ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(s.refused[r].Load()), r.String())
	}
	ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(s.active.Load()))
}
