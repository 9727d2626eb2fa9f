package monitoring

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

const (
	rulesFile     = "prometheus/leanmesh-rules.yaml"
	dashboardFile = "grafana/leanmesh.json"
)

// promtool (Debian's Prometheus v2.42) loads the shipped rules.
func TestRulesPassPromtool(t *testing.T) {
	out, err := exec.Command(promtoolPath(t), "check", "rules", rulesFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool check rules %s: %v\n%s", rulesFile, err, out)
	}
}

// Every rule names only series leanmesh or Prometheus itself exports, and
// parses with Prometheus' own parser.
func TestRulesParse(t *testing.T) {
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			n++
			if _, err := promQL.ParseExpr(r.Expr); err != nil {
				t.Errorf("%s: %v", r.Alert, err)
			}
			checkSeries(t, r.Alert, r.Expr)
		}
	}
	if n == 0 {
		t.Fatal("no rules")
	}
}

// The dashboard is valid JSON and every panel's query parses with
// Prometheus' parser once Grafana's variables are substituted.
func TestDashboardQueriesParse(t *testing.T) {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("%s: no uid or panels", dashboardFile)
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if _, err := promQL.ParseExpr(GrafanaExpr(tg.Expr)); err != nil {
				t.Errorf("panel %q: %v\n%s", p.Title, err, tg.Expr)
			}
			checkSeries(t, p.Title, tg.Expr)
		}
	}
}

var grafanaVar = regexp.MustCompile(`\$\{?(\w+)\}?`)

// GrafanaExpr substitutes Grafana's variables in a panel query the way a
// dashboard would at run time: range variables become durations, template
// variables a match-all regex.
func GrafanaExpr(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		name := strings.Trim(v, "${}")
		switch name {
		case "__rate_interval", "__interval", "interval":
			return "1m"
		case "__range":
			return "1h"
		case "__range_s":
			return "3600"
		case "__interval_ms":
			return "60000"
		}
		return ".*"
	})
}

// knownSeries are the leanmesh series the shipped files may read (docs/metrics.md).
var knownSeries = regexp.MustCompile(`^(leanmesh_(panics_total|series|series_overflow_records_total|errors_total|header_writer_fallback_total|config_rejected_total|go_heap_live_bytes|workload_discovery_(updates|errors)_total|tcp_connections_(untracked|stale)_total|controller_(pods_missing_library|reconciles_total|rendered_objects)|lazyxds_[a-z_]+)|scrape_duration_seconds|scrape_samples_scraped|up)$`)

func checkSeries(t *testing.T, where, expr string) {
	t.Helper()
	e, err := promQL.ParseExpr(GrafanaExpr(expr))
	if err != nil {
		return
	}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok && !knownSeries.MatchString(vs.Name) {
			t.Errorf("%s reads %q, which nothing exports", where, vs.Name)
		}
		return nil
	})
}

// promQL is Prometheus' parser with its default (stable) language: a query
// needing an experimental feature fails, as it would on a stock server.
var promQL = parser.NewParser(parser.Options{})
