package install

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
)

// Metrics are the controller's own series, registered on controller-runtime's
// registry so they are served with its workqueue and client metrics.
type Metrics struct {
	reconciles *prometheus.CounterVec
	rendered   *prometheus.GaugeVec
	missing    *prometheus.GaugeVec
	rejected   *prometheus.GaugeVec
	skew       *prometheus.GaugeVec
}

// NewMetrics registers the series on reg (nil: not registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leanmesh_controller_reconciles_total",
			Help: "TelemetryPolicy reconciles by result (success, error).",
		}, []string{"result"}),
		rendered: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "leanmesh_controller_rendered_objects",
			Help: "EnvoyFilters and Telemetry resources applied for a policy.",
		}, []string{"namespace", "policy"}),
		missing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "leanmesh_controller_pods_missing_library",
			Help: "Selected injected pods without the leanmesh library label for the policy's Envoy version.",
		}, []string{"namespace", "policy"}),
		rejected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "leanmesh_controller_proxies_rejecting",
			Help: "Pods a policy configures whose proxy NACKed its last listener update with an error mentioning leanmesh (istiod's /debug/syncz).",
		}, []string{"namespace", "policy"}),
		skew: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "leanmesh_controller_pods_proxy_version_skew",
			Help: "Pods with the library label whose proxy reports an Istio version outside the policy's proxyVersion match (they keep Istio's telemetry).",
		}, []string{"namespace", "policy"}),
	}
	if reg != nil {
		reg.MustRegister(m.reconciles, m.rendered, m.missing, m.rejected, m.skew)
	}
	return m
}

func (m *Metrics) observeReconcile(err error) {
	if m == nil {
		return
	}
	result := "success"
	if err != nil {
		result = "error"
	}
	m.reconciles.WithLabelValues(result).Inc()
}

func (m *Metrics) setRendered(ns, name string, n int) {
	if m != nil {
		m.rendered.WithLabelValues(ns, name).Set(float64(n))
	}
}

func (m *Metrics) setMissing(ns, name string, ws []v1alpha1.WorkloadRef) {
	if m != nil {
		m.missing.WithLabelValues(ns, name).Set(float64(countPods(ws)))
	}
}

func (m *Metrics) setRejected(ns, name string, n int) {
	if m != nil {
		m.rejected.WithLabelValues(ns, name).Set(float64(n))
	}
}

func (m *Metrics) setSkew(ns, name string, n int) {
	if m != nil {
		m.skew.WithLabelValues(ns, name).Set(float64(n))
	}
}

// forget drops a deleted policy's series.
func (m *Metrics) forget(ns, name string) {
	if m != nil {
		m.rendered.DeleteLabelValues(ns, name)
		m.missing.DeleteLabelValues(ns, name)
		m.rejected.DeleteLabelValues(ns, name)
		m.skew.DeleteLabelValues(ns, name)
	}
}
