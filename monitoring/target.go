// Package monitoring holds what a user's Prometheus, prometheus-operator and
// Grafana need to read leanmesh, generated from one description of the
// scrape target:
//
//   - prometheus/scrape-config.yaml: a plain scrape_config job (Istio's
//     Prometheus addon, any Prometheus without the operator);
//   - charts/leanmesh/templates/podmonitor.yaml: the chart's optional
//     PodMonitor, selecting the same container port, and
//     prometheus-operator/podmonitor.yaml, the same object without Helm;
//   - prometheus/leanmesh-rules.yaml and grafana/leanmesh.json: alerts and a
//     dashboard for leanmesh's own series (docs/metrics.md).
//
// It lives at the top level, not in the chart, because users without Helm
// apply these files directly; the chart carries generated copies that a test
// keeps equal. Pure: no Kubernetes client, no cgo.
package monitoring

import (
	"fmt"
	"strings"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/envoy-build/podpatch"
	"github.com/leanmesh/leanmesh/filters/pluginconfig"
)

// Target is where a proxy serves leanmesh's exposition: the named port the
// library install paths declare on istio-proxy (envoy-build/podpatch).
type Target struct {
	Container string // istio-proxy
	PortName  string // leanmesh-prom
	Path      string // /stats/prometheus
	// SelectorLabel is carried by every pod with the library.
	SelectorLabel string
	// Job names the plain scrape job.
	Job string
}

// Proxies is the one scrape target description both configs come from.
var Proxies = Target{
	Container:     podpatch.ProxyContainer,
	PortName:      podpatch.MetricsPortName,
	Path:          pluginconfig.DefaultExpositionPath,
	SelectorLabel: v1alpha1.LabelEnvoyVersion,
	Job:           "leanmesh-proxies",
}

const generated = "# Generated from monitoring/target.go (go test ./monitoring -update). Do not edit.\n"

// ScrapeConfig is a scrape_config job. Prometheus' pod discovery makes one
// target per declared container port (and one per container without ports),
// so the job keeps exactly one per pod: the named port on istio-proxy. The
// address is then podIP:15095 as discovered; no rewrite is needed. It drops
// finished pods as prometheus-operator's PodMonitors do (promcfg.go,
// generateRunningFilter) and sets namespace/pod/container like them.
func (t Target) ScrapeConfig() string {
	var b strings.Builder
	b.WriteString(generated)
	b.WriteString("# Append to scrape_configs in prometheus.yml (for Istio's addon: the prometheus ConfigMap in istio-system).\n")
	fmt.Fprintf(&b, "job_name: %s\n", t.Job)
	fmt.Fprintf(&b, "metrics_path: %s\n", t.Path)
	b.WriteString("kubernetes_sd_configs:\n- role: pod\n")
	b.WriteString("relabel_configs:\n")
	b.WriteString("- action: drop\n  source_labels: [__meta_kubernetes_pod_phase]\n  regex: Failed|Succeeded\n")
	fmt.Fprintf(&b, "- action: keep\n  source_labels: [__meta_kubernetes_pod_labelpresent_%s]\n  regex: \"true\"\n", sanitize(t.SelectorLabel))
	fmt.Fprintf(&b, "- action: keep\n  source_labels: [__meta_kubernetes_pod_container_name, __meta_kubernetes_pod_container_port_name]\n  regex: %s;%s\n", t.Container, t.PortName)
	for _, l := range []struct{ from, to string }{
		{"__meta_kubernetes_namespace", "namespace"},
		{"__meta_kubernetes_pod_name", "pod"},
		{"__meta_kubernetes_pod_container_name", "container"},
	} {
		fmt.Fprintf(&b, "- source_labels: [%s]\n  target_label: %s\n", l.from, l.to)
	}
	return b.String()
}

// PodMonitorTemplate is the chart's PodMonitor (a Helm template, off by
// default). prometheus-operator keeps targets by port name only
// (promcfg.go generatePodMonitorConfig: keep __meta_kubernetes_pod_container_port_name),
// so the container is kept explicitly too, as Istio's own PodMonitor does.
func (t Target) PodMonitorTemplate() string {
	var b strings.Builder
	b.WriteString("{{- /* Generated from monitoring/target.go (go test ./monitoring -update). Do not edit. */ -}}\n")
	b.WriteString("{{- if .Values.podMonitor.enabled }}\n")
	b.WriteString("apiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\nmetadata:\n")
	b.WriteString("  name: {{ .Release.Name }}-proxies\n")
	b.WriteString("  namespace: {{ .Values.podMonitor.namespace | default .Release.Namespace }}\n")
	b.WriteString("  labels:\n    app.kubernetes.io/name: leanmesh\n    app.kubernetes.io/instance: {{ .Release.Name }}\n")
	b.WriteString("    {{- with .Values.podMonitor.labels }}{{ toYaml . | nindent 4 }}{{ end }}\n")
	t.podMonitorSpec(&b, "    {{- with .Values.podMonitor.interval }}\n    interval: {{ . }}\n    {{- end }}\n")
	b.WriteString("{{- end }}\n")
	return b.String()
}

// PodMonitor is the same PodMonitor as a plain manifest, for users who run
// prometheus-operator without Helm (the chart's release "leanmesh" in
// leanmesh-system renders the same object). e2e/promoperator runs
// prometheus-operator's own config generator over it.
func (t Target) PodMonitor() string {
	var b strings.Builder
	b.WriteString(generated)
	b.WriteString("# Add the labels your Prometheus selects PodMonitors by (kube-prometheus-stack: release: <its release>).\n")
	b.WriteString("apiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\nmetadata:\n")
	b.WriteString("  name: leanmesh-proxies\n  namespace: leanmesh-system\n")
	b.WriteString("  labels:\n    app.kubernetes.io/name: leanmesh\n    app.kubernetes.io/instance: leanmesh\n")
	t.podMonitorSpec(&b, "")
	return b.String()
}

// podMonitorSpec writes the spec both PodMonitor forms share; interval is
// the template's optional interval line.
func (t Target) podMonitorSpec(b *strings.Builder, interval string) {
	b.WriteString("spec:\n  namespaceSelector:\n    any: true\n")
	fmt.Fprintf(b, "  selector:\n    matchExpressions:\n    - key: %s\n      operator: Exists\n", t.SelectorLabel)
	b.WriteString("  podMetricsEndpoints:\n")
	fmt.Fprintf(b, "  - port: %s\n    path: %s\n", t.PortName, t.Path)
	b.WriteString(interval)
	fmt.Fprintf(b, "    relabelings:\n    - action: keep\n      sourceLabels: [__meta_kubernetes_pod_container_name]\n      regex: %s\n", t.Container)
}

// sanitize is Prometheus' label-name form of a Kubernetes label key, as in
// __meta_kubernetes_pod_labelpresent_<key>.
func sanitize(key string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, key)
}
