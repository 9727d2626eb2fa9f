package telemetry

// Metric identifies one of Istio's standard metric families.
type Metric uint8

const (
	RequestsTotal Metric = iota
	RequestDuration
	RequestBytes
	ResponseBytes
	RequestMessages
	ResponseMessages
	TCPOpened
	TCPClosed
	TCPSentBytes
	TCPReceivedBytes
	numMetrics
)

// Kind is the Prometheus type of a family.
type Kind uint8

const (
	KindCounter Kind = iota
	KindHistogram
)

// MetricSpec describes a family: its exact Prometheus name, the short name
// used by Istio's stats.PluginConfig overrides, its type and its label set.
type MetricSpec struct {
	Name      string // Prometheus family name, e.g. istio_requests_total
	ShortName string // name in stats.PluginConfig, e.g. requests_total
	Kind      Kind
	Labels    []Label
	Help      string
}

var metricSpecs = [numMetrics]MetricSpec{
	RequestsTotal:    {"istio_requests_total", "requests_total", KindCounter, HTTPLabels, "Requests handled, counted at access-log time."},
	RequestDuration:  {"istio_request_duration_milliseconds", "request_duration_milliseconds", KindHistogram, HTTPLabels, "Request duration in milliseconds."},
	RequestBytes:     {"istio_request_bytes", "request_bytes", KindHistogram, HTTPLabels, "Downstream wire bytes received per request."},
	ResponseBytes:    {"istio_response_bytes", "response_bytes", KindHistogram, HTTPLabels, "Downstream wire bytes sent per request."},
	RequestMessages:  {"istio_request_messages_total", "request_messages_total", KindCounter, PeerLabels, "gRPC messages received from the client."},
	ResponseMessages: {"istio_response_messages_total", "response_messages_total", KindCounter, PeerLabels, "gRPC messages sent to the client."},
	TCPOpened:        {"istio_tcp_connections_opened_total", "tcp_connections_opened_total", KindCounter, TCPLabels, "TCP connections opened."},
	TCPClosed:        {"istio_tcp_connections_closed_total", "tcp_connections_closed_total", KindCounter, TCPLabels, "TCP connections closed."},
	TCPSentBytes:     {"istio_tcp_sent_bytes_total", "tcp_sent_bytes_total", KindCounter, TCPLabels, "TCP bytes sent to the downstream."},
	TCPReceivedBytes: {"istio_tcp_received_bytes_total", "tcp_received_bytes_total", KindCounter, TCPLabels, "TCP bytes received from the downstream."},
}

// Spec returns the description of m.
func (m Metric) Spec() MetricSpec { return metricSpecs[m] }

// String returns the Prometheus family name.
func (m Metric) String() string { return metricSpecs[m].Name }

// MetricByShortName finds a family by its stats.PluginConfig name
// ("requests_total") or its full name ("istio_requests_total").
func MetricByShortName(name string) (Metric, bool) {
	for i := range metricSpecs {
		if metricSpecs[i].ShortName == name || metricSpecs[i].Name == name {
			return Metric(i), true
		}
	}
	return 0, false
}

// HTTPMetrics are the families one HTTP request series carries.
var HTTPMetrics = []Metric{RequestsTotal, RequestDuration, RequestBytes, ResponseBytes, RequestMessages, ResponseMessages}

// TCPMetrics are the families one TCP connection series carries.
var TCPMetrics = []Metric{TCPOpened, TCPClosed, TCPSentBytes, TCPReceivedBytes}

// DefaultBuckets are Envoy's default histogram bucket bounds, which Istio's
// dashboards assume for both the millisecond and the byte histograms.
var DefaultBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// BuildMetricName is the gauge carrying the proxy's Istio version; leanmesh
// serves it only under Shadow's prefix (Istio's filter reports it in every
// mode, see smallFamilies).
const BuildMetricName = "istio_build"
