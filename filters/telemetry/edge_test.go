package telemetry

import (
	"fmt"
	"strings"
	"testing"
)

// A realistic pod for the series budget: 20 edges in each direction (it
// calls 20 services and 20 workloads call it), one response code per edge,
// HTTP. What Prometheus stores per edge and what one scrape of the pod
// weighs, per configuration.

type edgeConfig struct {
	name   string
	opts   Options
	accept string // the scraper's Accept header
}

// commonTagRemovals is the kind of list users apply to Istio's stats to cut
// label bytes (principals, revisions, versions, clusters, protocol, gRPC
// status, security policy).
var commonTagRemovals = []string{"source_principal", "destination_principal", "source_canonical_revision",
	"destination_canonical_revision", "source_version", "destination_version", "source_cluster", "destination_cluster",
	"request_protocol", "grpc_response_status", "connection_security_policy"}

func edgeConfigs(tb testing.TB) []edgeConfig {
	removed, err := CompileOverrides([]MetricOverride{{TagsToRemove: commonTagRemovals}})
	if err != nil {
		tb.Fatal(err)
	}
	return []edgeConfig{
		{name: "classic default buckets (Istio's layout)", opts: Options{}},
		{name: "classic custom buckets (8 bounds)", opts: Options{Buckets: []float64{5, 10, 25, 50, 100, 250, 1000, 5000}}},
		{name: "common tag removals, default buckets", opts: Options{Overrides: removed}},
		{name: "native histograms schema 3 (protobuf scrape)", opts: Options{NativeHistograms: true, NativeSchema: 3}, accept: protoAccept},
		{name: "native histograms schema 0 (protobuf scrape)", opts: Options{NativeHistograms: true, NativeSchema: 0}, accept: protoAccept},
		{name: "native histograms schema 3 + tag removals (protobuf)", opts: Options{NativeHistograms: true, NativeSchema: 3, Overrides: removed}, accept: protoAccept},
	}
}

const podEdges = 20

// recordPod records 100 requests on each of the pod's 2×20 edges.
func recordPod(r *Registry) {
	local := r.InternPeer(Peer{Workload: "reviews-v2", Namespace: "bookinfo", CanonicalService: "reviews", CanonicalRevision: "v2", App: "reviews", Version: "v2", Cluster: "Kubernetes"})
	for e := 0; e < podEdges; e++ {
		svc := fmt.Sprintf("backend-%02d", e)
		callee := r.InternPeer(Peer{Workload: svc + "-v1", Namespace: "bookinfo", CanonicalService: svc, CanonicalRevision: "v1", App: svc, Version: "v1", Cluster: "Kubernetes"})
		caller := r.InternPeer(Peer{Workload: fmt.Sprintf("frontend-%02d-v1", e), Namespace: "bookinfo", CanonicalService: fmt.Sprintf("frontend-%02d", e), CanonicalRevision: "v1", App: fmt.Sprintf("frontend-%02d", e), Version: "v1", Cluster: "Kubernetes"})
		out := Key{Reporter: ReporterSource, Local: local, Peer: callee, Service: Service{Host: svc + ".bookinfo.svc.cluster.local", Name: svc},
			PeerPrincipal: "spiffe://cluster.local/ns/bookinfo/sa/" + svc, LocalPrincipal: "spiffe://cluster.local/ns/bookinfo/sa/reviews", ResponseCode: 200, ResponseFlags: "-"}
		in := Key{Reporter: ReporterDestination, Local: local, Peer: caller, Service: Service{Host: "reviews.bookinfo.svc.cluster.local", Name: "reviews"},
			PeerPrincipal: fmt.Sprintf("spiffe://cluster.local/ns/bookinfo/sa/frontend-%02d", e), LocalPrincipal: "spiffe://cluster.local/ns/bookinfo/sa/reviews", ResponseCode: 200, ResponseFlags: "-"}
		for i := 0; i < 100; i++ {
			o := HTTPObservation{DurationMs: uint64(1 + i*i%700), HasDuration: true, RequestBytes: uint64(200 + 13*i), ResponseBytes: uint64(1000 + 997*i), HasBytes: true}
			r.RecordHTTP(0, &out, &o)
			r.RecordHTTP(0, &in, &o)
		}
	}
}

// storedSeries counts the Istio series Prometheus stores from one scrape:
// a sample line of the text format is a series; in protobuf a counter is
// one, a native histogram is one (no _bucket, _sum, _count series).
func storedSeries(tb testing.TB, body []byte, proto bool) int {
	n := 0
	if !proto {
		for _, f := range parseExposition(tb, body) {
			if !strings.HasPrefix(f.GetName(), "istio_") || f.GetName() == BuildMetricName {
				continue
			}
			for _, m := range f.GetMetric() {
				if h := m.GetHistogram(); h != nil {
					n += len(h.GetBucket()) + 2 // buckets (+Inf included), _sum, _count
					continue
				}
				n++
			}
		}
		return n
	}
	for name, f := range decodeProto(tb, body) {
		if !strings.HasPrefix(name, "istio_") || name == BuildMetricName {
			continue
		}
		for _, m := range f.GetMetric() {
			if h := m.GetHistogram(); h != nil && h.GetZeroThreshold() == 0 && len(h.GetPositiveSpan()) == 0 {
				n += len(h.GetBucket()) + 3 // +Inf is implicit in protobuf
				continue
			}
			n++
		}
	}
	return n
}

type edgeResult struct {
	seriesPerEdge float64
	scrapeBytes   int
}

func measurePod(tb testing.TB, c edgeConfig) edgeResult {
	r := NewRegistry(c.opts)
	recordPod(r)
	body, ct := ContentFor(nil, c.accept, r)
	return edgeResult{float64(storedSeries(tb, body, ct == ProtoContentType)) / (2 * podEdges), len(body)}
}

// TestSeriesPerEdge holds the budget: Istio's layout stores 67 series per
// HTTP edge (requests_total + 3 histograms × (20 buckets + sum + count));
// native histograms store 4 (target ≤ 16).
func TestSeriesPerEdge(t *testing.T) {
	for _, c := range edgeConfigs(t) {
		res := measurePod(t, c)
		t.Logf("%-55s %5.1f series/edge  %8d scrape bytes/pod", c.name, res.seriesPerEdge, res.scrapeBytes)
		switch {
		case c.opts.NativeHistograms && res.seriesPerEdge > 16:
			t.Errorf("%s: %v series per edge, target ≤ 16", c.name, res.seriesPerEdge)
		case c.opts.Buckets == nil && !c.opts.NativeHistograms && res.seriesPerEdge != 67:
			t.Errorf("%s: %v series per edge, want 67", c.name, res.seriesPerEdge)
		}
	}
}

// BenchmarkSeriesPerEdge prints series per edge and scrape bytes per pod
// (20 edges, both directions) for each configuration (counts, not timings;
// -benchtime=1x is enough). docs/performance.md records the output.
func BenchmarkSeriesPerEdge(b *testing.B) {
	for _, c := range edgeConfigs(b) {
		b.Run(strings.NewReplacer(" ", "_", "(", "", ")", "", "'", "", ",", "", "+", "and").Replace(c.name), func(b *testing.B) {
			var res edgeResult
			for i := 0; i < b.N; i++ {
				res = measurePod(b, c)
			}
			b.ReportMetric(res.seriesPerEdge, "series/edge")
			b.ReportMetric(float64(res.scrapeBytes), "scrape-bytes/pod")
			b.ReportMetric(0, "ns/op")
		})
	}
}
