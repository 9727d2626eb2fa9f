package render

import (
	"encoding/json"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	statsapi "istio.io/api/envoy/extensions/stats"
)

// istioStandardMetrics are the names Istio's stats filter accepts in
// stats.PluginConfig.metrics[].name for its standard families (istio_stats.cc
// Context::all_metrics_; istiod's metricToPrometheusMetric). A drop entry
// must name one: an empty name matches none (Config::Config looks drop names
// up one by one).
var istioStandardMetrics = []string{
	"requests_total", "request_duration_milliseconds", "request_bytes", "response_bytes",
	"request_messages_total", "response_messages_total",
	"tcp_connections_opened_total", "tcp_connections_closed_total",
	"tcp_sent_bytes_total", "tcp_received_bytes_total",
}

// istioBuildCarrier is Istio's own stats network filter (istio.stats) with
// every standard metric dropped, put before the scrape listener's connection
// manager of a LeanMesh-mode gateway. It exists for istio_build alone.
//
// Why: Istio's filter sets istio_build{component="proxy",tag=<ISTIO_VERSION>}
// when Envoy builds any istio.stats config, HTTP or network
// (contrib/istio/filters/http/istio_stats/source/istio_stats.cc in Envoy
// v1.39: both factories construct Config, whose constructor calls
// recordVersion before and regardless of the metric overrides). LeanMesh mode
// removes istio.stats from HTTP chains; a sidecar keeps it on its catch-all
// and inbound TCP chains, but a gateway has only its Gateway servers' chains,
// so an HTTP-only gateway would report no istio_build at all.
//
// Why Istio's filter and not a copy served by leanmesh: the gauge is then
// Istio's own (name, labels, value, the custom-namespace stripping, the
// 15020 endpoint), and it can never be counted twice: Envoy's stat allocator
// keeps one gauge per name (AllocatorImpl::makeGauge returns the existing
// one), so a gateway that also has TCP chains with istio.stats sets the same
// series to 1 again, as Istio's own dozens of configs per proxy do.
//
// Cost: only scrape connections pass it. Every metric is dropped (addCounter
// returns before touching a stat) and tcp_reporting_duration 0 arms no
// report timer (onNewConnection: only when report_duration_ > 0).
func istioBuildCarrier() (map[string]any, error) {
	cfg := &statsapi.PluginConfig{TcpReportingDuration: durationpb.New(0)}
	for _, m := range istioStandardMetrics {
		cfg.Metrics = append(cfg.Metrics, &statsapi.MetricConfig{Name: m, Drop: true})
	}
	a, err := anypb.New(cfg)
	if err != nil {
		return nil, err
	}
	raw, err := protojson.Marshal(a)
	if err != nil {
		return nil, err
	}
	var typed map[string]any
	if err := json.Unmarshal(raw, &typed); err != nil {
		return nil, err
	}
	return map[string]any{"name": IstioStatsFilter, "typed_config": typed}, nil
}
