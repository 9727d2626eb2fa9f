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
