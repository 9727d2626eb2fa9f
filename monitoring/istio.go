package monitoring

import (
	"encoding/json"
	"os"
)

// IstioQuery is one PromQL query of Istio's Grafana dashboards, as kept in
// istio/dashboards.json with the Istio version it came from.
type IstioQuery struct {
	Dashboard string `json:"dashboard"`
	Panel     string `json:"panel"`
	Expr      string `json:"expr"`
}

// IstioQueries reads istio/dashboards.json (path relative to the caller).
func IstioQueries(path string) (source string, qs []IstioQuery, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", nil, err
	}
	var f struct {
		Source  string       `json:"source"`
		Queries []IstioQuery `json:"queries"`
	}
	err = json.Unmarshal(b, &f)
	return f.Source, f.Queries, err
}

// KialiQuery is one of Kiali's traffic-graph queries (kiali/graph-queries.json).
type KialiQuery struct {
	Name string `json:"name"`
	Expr string `json:"expr"`
}

// KialiQueries reads kiali/graph-queries.json: the queries, the labels Kiali
// requires on every sample, and where they came from.
func KialiQueries(path string) (source string, grouping []string, qs []KialiQuery, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", nil, nil, err
	}
	var f struct {
		Source   string       `json:"source"`
		Grouping []string     `json:"groupingLabels"`
		Queries  []KialiQuery `json:"queries"`
	}
	err = json.Unmarshal(b, &f)
	return f.Source, f.Grouping, f.Queries, err
}
