package monitoring

import (
	"strings"
	"testing"
)

// Every extracted query parses with Prometheus' parser after Grafana's
// variables are substituted, and the file says which Istio it came from.
func TestIstioDashboardQueriesParse(t *testing.T) {
	source, qs, err := IstioQueries("istio/dashboards.json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(source, "istio.io/istio@") || len(qs) < 100 {
		t.Fatalf("istio/dashboards.json: source %q, %d queries", source, len(qs))
	}
	for _, q := range qs {
		if _, err := promQL.ParseExpr(GrafanaExpr(q.Expr)); err != nil {
			t.Errorf("%s / %s: %v", q.Dashboard, q.Panel, err)
		}
	}
}
