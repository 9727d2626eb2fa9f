package main

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite podmonitor.scrape-config.yaml")

const (
	podMonitor = "../../monitoring/prometheus-operator/podmonitor.yaml"
	generated  = "../../monitoring/prometheus-operator/podmonitor.scrape-config.yaml"
)

// The committed jobs are what the operator generates today for the shipped
// PodMonitor: a change to monitoring/target.go or an operator bump that
// changes the relabeling fails here until the file (and the real-Prometheus
// e2e reading it) is regenerated.
func TestGeneratedJobsMatch(t *testing.T) {
	got, err := scrapeJobs(podMonitor)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(got), "(unknown version)") {
		t.Fatal("the operator's version is missing from the build info")
	}
	if *update {
		if err := os.WriteFile(generated, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(generated)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s is not what prometheus-operator generates (cd e2e/promoperator && go test . -update): %v\n%s", generated, err, got)
	}
}

// A PodMonitor the operator's schema does not know is refused, not half read.
func TestUnknownFieldRefused(t *testing.T) {
	f := t.TempDir() + "/pm.yaml"
	if err := os.WriteFile(f, []byte("apiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\nspec:\n  podMetricEndpoints: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := scrapeJobs(f); err == nil || !strings.Contains(err.Error(), "podMetricEndpoints") {
		t.Fatalf("want the misspelt field refused, got %v", err)
	}
}
