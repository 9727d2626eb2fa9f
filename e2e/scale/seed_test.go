package scale

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"sigs.k8s.io/yaml"

	"github.com/leanmesh/leanmesh/controller/lazyxds"
	"github.com/leanmesh/leanmesh/controller/lazyxds/seed"
	lmprom "github.com/leanmesh/leanmesh/e2e/prometheus"
)

func heapMB() float64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc) / 1e6
}

// BenchmarkSeedScale: seeding a 10,000-service mesh whose Prometheus holds
// 100,000 edges (LEANMESH_SEED_SERVICES / LEANMESH_SEED_EDGES): a registry
// with Istio's istio_requests_total labels (source reporter; 1,000 calling
// workloads × 100 destinations, one series per edge) is scraped by the real Prometheus; the controller's query
// (seed.Fetch), Graph.Seed, one Drain (= Sidecar writes) and the snapshot
// are measured. Run with -benchtime=1x (make bench-scale).
func BenchmarkSeedScale(b *testing.B) {
	services, edges := 10_000, 100_000
	if v, err := strconv.Atoi(os.Getenv("LEANMESH_SEED_SERVICES")); err == nil && v > 0 {
		services = v
	}
	if v, err := strconv.Atoi(os.Getenv("LEANMESH_SEED_EDGES")); err == nil && v > 0 {
		edges = v
	}
	const perCaller = 100
	callers := edges / perCaller
	const namespaces = 10
	svcHost := func(i int) string { return fmt.Sprintf("svc-%d.ns%d.svc.cluster.local", i, i%namespaces) }

	// The mesh's telemetry: what every caller's sidecar exports, in one registry.
	reg := prometheus.NewRegistry()
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_requests_total", Help: "Istio standard request counter."},
		[]string{"reporter", "source_workload", "source_workload_namespace", "destination_service", "destination_service_namespace", "response_code"})
	reg.MustRegister(reqs)
	for c := 0; c < callers; c++ {
		ns := fmt.Sprintf("ns%d", c%namespaces)
		for k := 0; k < perCaller; k++ {
			d := (c*perCaller + k*37) % services
			reqs.WithLabelValues("source", fmt.Sprintf("caller-%d", c), ns, svcHost(d), fmt.Sprintf("ns%d", d%namespaces), "200").Add(float64(1 + k))
		}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	hs := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}
	go func() { _ = hs.Serve(lis) }()
	defer hs.Close()
	// A 100,000-series target takes seconds to render and ingest on a busy machine.
	job, _ := yaml.Marshal(map[string]any{"job_name": "mesh", "scrape_interval": "20s", "scrape_timeout": "20s",
		"static_configs": []any{map[string]any{"targets": []string{lis.Addr().String()}}}})
	prom := lmprom.StartT(b, lmprom.Options{ScrapeConfigs: []string{string(job)}})
	scraped := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		targets, err := prom.WaitScraped(ctx, "mesh", time.Now())
		if err != nil {
			b.Fatal(err)
		}
		if down := lmprom.Down(targets); len(down) > 0 {
			b.Fatalf("scrape: %v", down)
		}
	}
	// Two scrapes with increases in between, so rate() has something to say.
	scraped()
	for c := 0; c < callers; c += 2 {
		reqs.WithLabelValues("source", fmt.Sprintf("caller-%d", c), fmt.Sprintf("ns%d", c%namespaces), svcHost((c*perCaller)%services), fmt.Sprintf("ns%d", ((c*perCaller)%services)%namespaces), "200").Add(5)
	}
	scraped()

	// The controller's graph: every service lazy, every caller a lazy workload.
	g := lazyxds.NewGraph(lazyxds.Options{})
	for i := 0; i < services; i++ {
		g.UpsertService(lazyxds.Service{Namespace: fmt.Sprintf("ns%d", i%namespaces), Host: svcHost(i), Ports: []lazyxds.Port{{Number: 8080, HTTP: true}}})
	}
	for c := 0; c < callers; c++ {
		g.UpsertWorkload(lazyxds.Workload{Namespace: fmt.Sprintf("ns%d", c%namespaces), Name: fmt.Sprintf("caller-%d", c),
			Labels: map[string]string{"app": fmt.Sprintf("caller-%d", c)}, IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 200, byte(c / 256), byte(c % 256)})}, Lazy: true})
	}
	baseline := len(g.Drain()) // the baseline Sidecars, written before seeding
	heap0 := heapMB()

	cfg := seed.Config{URL: prom.URL, LookBack: time.Hour, MaxEdges: 2 * edges, Timeout: 2 * time.Minute}
	ctx := context.Background()
	res, err := seed.Fetch(ctx, cfg, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	heapQuery := heapMB()
	t0 := time.Now()
	applied := g.Seed(res.Edges, time.Now(), nil)
	seedTook := time.Since(t0)
	res.Edges, res.Rates = nil, nil
	heapSeeded := heapMB()
	t0 = time.Now()
	changes := g.Drain()
	drainTook := time.Since(t0)
	snap := g.Snapshot()
	raw, err := snap.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	// A second query finds nothing new and changes no Sidecar.
	res2, err := seed.Fetch(ctx, cfg, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	again := g.Seed(res2.Edges, time.Now(), nil)
	changes2 := g.Drain()
	minRate := cfg
	minRate.MinRate = 0.1
	res3, err := seed.Fetch(ctx, minRate, time.Now())
	if err != nil {
		b.Fatal(err)
	}

	fmt.Printf("\nseeding from telemetry: %d services, %d calling workloads, %d edges (one series each) in a real Prometheus v2.42\n", services, callers, edges)
	fmt.Printf("query (topk %d, look-back 1h): %v, %d edges, %.1f MB response, truncated=%v\n", cfg.MaxEdges, res.Took.Round(time.Millisecond), len(res2.Edges), float64(res.Bytes)/1e6, res.Truncated)
	fmt.Printf("same query with minRate 0.1/s: %v, %d edges\n", res3.Took.Round(time.Millisecond), len(res3.Edges))
	fmt.Printf("Graph.Seed: %v, added %d, skipped %d; Drain: %v, %d Sidecar writes (after %d baseline writes); repeat query: %d added, %d Sidecar writes\n",
		seedTook.Round(time.Millisecond), applied.Added, applied.Skipped(), drainTook.Round(time.Millisecond), len(changes), baseline, again.Added, len(changes2))
	fmt.Printf("controller heap: %.1f MB before, %.1f MB holding the query result, %.1f MB after seeding (+%.1f MB for %d dependencies)\n",
		heap0, heapQuery, heapSeeded, heapSeeded-heap0, g.Stats().Dependencies)
	fmt.Printf("snapshot: %d bytes gzipped (ConfigMap budget 921600): %.1f bytes per dependency\n", len(raw), float64(len(raw))/float64(g.Stats().Dependencies))
	b.ReportMetric(float64(res.Took.Milliseconds()), "query-ms")
	b.ReportMetric(float64(len(changes)), "sidecar-writes")
	b.ReportMetric(heapSeeded-heap0, "heap-MB")
	b.ReportMetric(float64(len(raw)), "snapshot-bytes")
	if applied.Added != edges || len(changes) != callers || again.Added != 0 || len(changes2) != 0 {
		b.Errorf("want %d dependencies in %d Sidecar writes, got %d in %d (repeat: %d, %d)", edges, callers, applied.Added, len(changes), again.Added, len(changes2))
	}
}
