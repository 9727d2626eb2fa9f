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

func TestKialiQueriesParse(t *testing.T) {
	source, grouping, qs, err := KialiQueries("kiali/graph-queries.json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(source, "kiali") || len(grouping) == 0 || len(qs) == 0 {
		t.Fatalf("kiali/graph-queries.json: source %q, %d labels, %d queries", source, len(grouping), len(qs))
	}
	r := strings.NewReplacer("$namespace", "bookinfo", "$duration", "60")
	for _, q := range qs {
		if _, err := promQL.ParseExpr(r.Replace(q.Expr)); err != nil {
			t.Errorf("%s: %v", q.Name, err)
		}
	}
}
