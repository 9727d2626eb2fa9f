package monitoring

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/render"
	"github.com/leanmesh/leanmesh/envoy-build/podpatch"
)

var update = flag.Bool("update", false, "rewrite the generated scrape config and PodMonitor template")

// generatedFiles are the committed outputs of Proxies.
func generatedFiles() map[string]string {
	return map[string]string{
		"prometheus/scrape-config.yaml":                Proxies.ScrapeConfig(),
		"../charts/leanmesh/templates/podmonitor.yaml": Proxies.PodMonitorTemplate(),
		"prometheus-operator/podmonitor.yaml":          Proxies.PodMonitor(),
	}
}

func TestGeneratedFilesMatch(t *testing.T) {
	for file, want := range generatedFiles() {
		if *update {
			if err := os.WriteFile(file, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(file)
		if err != nil || !bytes.Equal(got, []byte(want)) {
			t.Errorf("%s differs from monitoring/target.go (go test ./monitoring -update): %v", file, err)
		}
	}
}

// The port the scrape keeps is the one the renderer's listener binds and the
// pod patch declares.
func TestTargetAgreesWithInstallPaths(t *testing.T) {
	if podpatch.MetricsPort != render.DefaultExposePort {
		t.Errorf("podpatch declares %d, the exposition listener binds %d", podpatch.MetricsPort, render.DefaultExposePort)
	}
	if Proxies.SelectorLabel != v1alpha1.LabelEnvoyVersion {
		t.Errorf("selector label %s, EnvoyFilters select %s", Proxies.SelectorLabel, v1alpha1.LabelEnvoyVersion)
	}
}

// promtool (Prometheus' own config loader, Debian v2.42) accepts the job
// inside a prometheus.yml. Debian builds Prometheus without Kubernetes
// discovery (its binary knows no kubernetes_sd_configs), so the check swaps
// the discovery for file_sd and loads everything else as shipped.
func TestScrapeConfigPassesPromtool(t *testing.T) {
	promtool := promtoolPath(t)
	var job map[string]any
	if err := yaml.Unmarshal([]byte(Proxies.ScrapeConfig()), &job); err != nil {
		t.Fatal(err)
	}
	if _, ok := job["kubernetes_sd_configs"]; !ok {
		t.Fatal("the shipped job must discover pods with kubernetes_sd_configs")
	}
	delete(job, "kubernetes_sd_configs")
	job["file_sd_configs"] = []any{map[string]any{"files": []any{"targets.json"}}}
	cfg, err := yaml.Marshal(map[string]any{"scrape_configs": []any{job}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(file, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "config", file).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool check config: %v\n%s\n%s", err, out, cfg)
	}
}

func promtoolPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found: install Debian's prometheus package with e2e/cluster/build-binaries.sh tools (%v)", err)
	}
	return p
}
