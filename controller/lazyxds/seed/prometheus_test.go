package seed_test

import (
	"context"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/leanmesh/leanmesh/controller/lazyxds/seed"
	lmprom "github.com/leanmesh/leanmesh/e2e/prometheus"
)

// TestQueryOnRealPrometheus runs the seed query on the real Prometheus
// (Debian's v2.42): namespace scoping, Istio's placeholders, the destination
// reporter, minRate, topk truncation, and an edge whose counter never moved
// in the window (its series scraped with a constant value).
func TestQueryOnRealPrometheus(t *testing.T) {
	reg := prometheus.NewRegistry()
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_requests_total", Help: "Istio standard request counter."},
		[]string{"reporter", "source_workload", "source_workload_namespace", "destination_service", "response_code"})
	reg.MustRegister(reqs)
	busy := reqs.WithLabelValues("source", "productpage", "shop", "reviews.shop.svc.cluster.local", "200")
	busy.Add(10)
	reqs.WithLabelValues("source", "productpage", "shop", "reviews.shop.svc.cluster.local", "503").Add(1)
	reqs.WithLabelValues("source", "productpage", "shop", "details.shop.svc.cluster.local", "200").Add(3) // never moves again
	reqs.WithLabelValues("source", "frontend", "web", "reviews.shop.svc.cluster.local", "200").Add(2)
	reqs.WithLabelValues("source", "unknown", "shop", "ratings.shop.svc.cluster.local", "200").Add(2)
	reqs.WithLabelValues("source", "productpage", "shop", "unknown", "200").Add(2)
	reqs.WithLabelValues("destination", "productpage", "shop", "ratings.shop.svc.cluster.local", "200").Add(2)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}
	go func() { _ = hs.Serve(lis) }()
	defer hs.Close()
	srv := lmprom.StartT(t, lmprom.Options{ScrapeConfigs: []string{lmprom.StaticJob("mesh", lis.Addr().String())}})
	srv.WaitScrapedT(t, "mesh", time.Now())
	busy.Add(50)
	srv.WaitScrapedT(t, "mesh", time.Now())

	edges := func(cfg seed.Config) ([]string, seed.Result) {
		t.Helper()
		cfg.URL, cfg.LookBack = srv.URL, 10*time.Minute
		res, err := seed.Fetch(context.Background(), cfg, time.Now())
		if err != nil {
			t.Fatalf("%s: %v", res.Query, err)
		}
		var out []string
		for _, e := range res.Edges {
			out = append(out, e.Workload.String()+" -> "+e.Service)
		}
		slices.Sort(out)
		return out, res
	}
	tests := []struct {
		name      string
		cfg       seed.Config
		want      []string
		truncated bool
	}{
		{"namespace, any call in the window", seed.Config{Namespaces: []string{"shop"}},
			[]string{"shop/productpage -> details.shop.svc.cluster.local", "shop/productpage -> reviews.shop.svc.cluster.local"}, false},
		{"root policy: excluded namespaces", seed.Config{ExcludeNamespaces: []string{"shop", "kube-system"}},
			[]string{"web/frontend -> reviews.shop.svc.cluster.local"}, false},
		{"minRate keeps the edge that moved", seed.Config{Namespaces: []string{"shop"}, MinRate: 0.001},
			[]string{"shop/productpage -> reviews.shop.svc.cluster.local"}, false},
		{"topk keeps the busiest", seed.Config{Namespaces: []string{"shop", "web"}, MaxEdges: 1},
			[]string{"shop/productpage -> reviews.shop.svc.cluster.local"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, res := edges(tc.cfg)
			if !slices.Equal(got, tc.want) || res.Truncated != tc.truncated {
				t.Fatalf("edges %v truncated %v, want %v %v\nquery: %s", got, res.Truncated, tc.want, tc.truncated, res.Query)
			}
			t.Logf("%d edges in %s (%d bytes): %s", len(got), res.Took.Round(time.Millisecond), res.Bytes, res.Query)
		})
	}
}
