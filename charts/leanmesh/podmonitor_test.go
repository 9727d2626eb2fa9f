package leanmesh

import (
	"testing"

	"sigs.k8s.io/yaml"
)

// The PodMonitor is off by default; enabled, it keeps the named port on
// istio-proxy only and carries the labels a kube-prometheus-stack selects.
func TestPodMonitor(t *testing.T) {
	for _, o := range mustTemplate(t, "", nil) {
		if o.GetKind() == "PodMonitor" {
			t.Fatal("PodMonitor rendered while podMonitor.enabled=false")
		}
	}
	docs, err := helmTemplate(t, "", map[string]string{"podMonitor.interval": "15s"}, "--set", "podMonitor.enabled=true")
	if err != nil {
		t.Fatal(err)
	}
	pm := find(docs, "PodMonitor", releaseName+"-proxies")
	if pm == nil {
		t.Fatal("no PodMonitor with podMonitor.enabled=true")
	}
	b, _ := yaml.Marshal(pm.Object)
	var got struct {
		Metadata struct {
			Namespace string            `json:"namespace"`
			Labels    map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec struct {
			PodMetricsEndpoints []struct {
				Port        string `json:"port"`
				Path        string `json:"path"`
				Interval    string `json:"interval"`
				Relabelings []struct {
					Action       string   `json:"action"`
					SourceLabels []string `json:"sourceLabels"`
					Regex        string   `json:"regex"`
				} `json:"relabelings"`
			} `json:"podMetricsEndpoints"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Metadata.Namespace != "leanmesh-system" || got.Metadata.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("metadata %+v", got.Metadata)
	}
	eps := got.Spec.PodMetricsEndpoints
	if len(eps) != 1 || eps[0].Port != "leanmesh-prom" || eps[0].Path != "/stats/prometheus" || eps[0].Interval != "15s" ||
		len(eps[0].Relabelings) != 1 || eps[0].Relabelings[0].Regex != "istio-proxy" {
		t.Errorf("endpoints %+v\n%s", eps, b)
	}
}
