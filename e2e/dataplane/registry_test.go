package dataplane

import (
	"bytes"
	"fmt"

	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/leanmesh/leanmesh/e2e/envoyhost"
	"github.com/leanmesh/leanmesh/filters/peer"
)

// Registry bounds through the real library: eviction under peer churn,
// budgets against hostile traffic, and what a scraper sees.

// scrapeRaw fetches the exposition with the given Accept header, as a
// scraper's request reaches the exposition listener.
func (s *sidecar) scrapeRaw(t testing.TB, accept string) ([]byte, string) {
	t.Helper()
	hdr := envoyhost.H(":method", "GET", ":path", "/stats/prometheus", ":authority", s.ip+":15095", ":scheme", "http")
	if accept != "" {
		hdr = append(hdr, envoyhost.H("accept", accept)...)
	}
	res, err := s.h.Run(&envoyhost.Request{Config: s.ex, NoResponse: true, Headers: hdr, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if res.LocalReply == nil || res.LocalReply.Code != 200 {
		t.Fatalf("scrape: %+v (error %q)", res.LocalReply, res.Error)
	}
	ct, _ := res.LocalReply.Headers.Get("content-type")
	return res.LocalReply.Body, ct
}

// serveScrapes puts an HTTP listener in front of the exposition filter, so
// a real Prometheus scrapes the library: each request (any path) becomes one
// stream on the exposition config, with the scraper's Accept header.
func (s *sidecar) serveScrapes(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdr := envoyhost.H(":method", "GET", ":path", "/stats/prometheus", ":authority", r.Host, ":scheme", "http")
		if a := r.Header.Get("Accept"); a != "" {
			hdr = append(hdr, envoyhost.H("accept", a)...)
		}
		res, err := s.h.Run(&envoyhost.Request{Config: s.ex, NoResponse: true, Headers: hdr, Timeout: time.Minute})
		if err != nil || res.LocalReply == nil {
			http.Error(w, fmt.Sprintf("host: %v", err), http.StatusBadGateway)
			return
		}
		for _, kv := range res.LocalReply.Headers {
			w.Header().Set(kv[0], kv[1])
		}
		w.WriteHeader(res.LocalReply.Code)
		_, _ = w.Write(res.LocalReply.Body)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

func parseText(t testing.TB, body []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("exposition does not parse with Prometheus' text parser: %v", err)
	}
	return fams
}

func gaugeOf(fams map[string]*dto.MetricFamily, name string) float64 {
	var v float64
	for _, m := range fams[name].GetMetric() {
		v += m.GetGauge().GetValue() + m.GetCounter().GetValue()
	}
	return v
}

// mxPeer is the metadata-exchange header pair of a client workload named w.
func mxPeer(t testing.TB, w string) (id, value string) {
	t.Helper()
	s, err := structpb.NewStruct(map[string]interface{}{
		"NAME": w + "-7d4b9c-x2x", "NAMESPACE": "churn", "WORKLOAD_NAME": w, "CLUSTER_ID": "Kubernetes",
		"LABELS": map[string]interface{}{"app": w, "version": "v1", "service.istio.io/canonical-name": w, "service.istio.io/canonical-revision": "v1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	v, err := peer.Encode(s)
	if err != nil {
		t.Fatal(err)
	}
	return "sidecar~10.2.0.1~" + w + "-7d4b9c-x2x.churn~churn.svc.cluster.local", v
}

// inboundFrom sends one request from the peer (id, value) to s's inbound
// listener, taking d.
func (s *sidecar) inboundFrom(t testing.TB, id, value string, d time.Duration, extra ...string) {
	t.Helper()
	_, meta := meshCluster("reviews", "bookinfo", "9080")
	hdr := envoyhost.H(append([]string{":method", "GET", ":path", "/r", ":authority", "reviews:9080", ":scheme", "http"}, extra...)...)
	if value != "" {
		hdr = append(hdr, envoyhost.H(mxIDHeader, id, mxHeader, value)...)
	}
	res, err := s.h.Run(&envoyhost.Request{Config: s.inbound, Headers: hdr, Cluster: meta,
		Info:            envoyhost.StreamInfo{Protocol: "HTTP/1.1", UpstreamCluster: "inbound|9080||", RequestDuration: d},
		ResponseHeaders: envoyhost.H(":status", "200")})
	if err != nil || res.Error != "" {
		t.Fatalf("request: %v %s", err, res.Error)
	}
}

// heapAfterGC runs the library's GC (envoyGoFilterCleanUp) and reads the
// live heap it reports in the exposition. It first waits until the SDK has
// finalized every request: requests still queued for finalization when a GC
// marks count as live (the +3 MB TestNoLeakOverManyRequests attributed).
func (s *sidecar) heapAfterGC(t testing.TB) float64 {
	t.Helper()
	if _, err := s.h.WaitNoLiveRequests(time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.h.GC(); err != nil {
		t.Fatal(err)
	}
	if err := s.h.GC(); err != nil { // cleanups of weak peers run after the first
		t.Fatal(err)
	}
	body, _ := s.scrapeRaw(t, "")
	return gaugeOf(parseText(t, body), "leanmesh_go_heap_live_bytes")
}

// dropHistograms keeps a churn run's scrape small without eviction (10k
// label sets with the three histograms would be ~540 MB of text); the
// registry still allocates their buckets.
var dropHistograms = []interface{}{
	map[string]interface{}{"name": "request_duration_milliseconds", "drop": true},
	map[string]interface{}{"name": "request_bytes", "drop": true},
	map[string]interface{}{"name": "response_bytes", "drop": true},
}

// TestChurnEvictionThroughHost: 10,000 distinct client workloads call the
// server sidecar over time, 1,000 per phase. With stats_eviction_interval
// the registry's series, its estimated memory and the scrape stay flat once
// the interval has passed; without, they grow with every phase, as before.
// A client that returns after eviction is counted again from zero.
func TestChurnEvictionThroughHost(t *testing.T) {
	const phases, perPhase = 10, 1000
	final := map[bool][]int64{}
	for _, evict := range []bool{true, false} {
		extra := map[string]interface{}{"metrics": dropHistograms}
		if evict {
			extra["stats_eviction_interval"] = "2s"
		}
		s := startSidecar(t, reviews, 1, extra)
		var sizes, series, mem []int64
		for p := 0; p < phases; p++ {
			for i := 0; i < perPhase; i++ {
				id, v := mxPeer(t, fmt.Sprintf("client-%d", p*perPhase+i))
				s.inboundFrom(t, id, v, time.Millisecond)
			}
			body, _ := s.scrapeRaw(t, "")
			fams := parseText(t, body)
			sizes = append(sizes, int64(len(body)))
			series = append(series, int64(gaugeOf(fams, "leanmesh_series")))
			mem = append(mem, int64(gaugeOf(fams, "leanmesh_series_bytes")))
			time.Sleep(time.Second)
		}
		heap := s.heapAfterGC(t)
		body, _ := s.scrapeRaw(t, "")
		fams := parseText(t, body)
		t.Logf("eviction=%v (%d phases × %d new peers, ~1 s apart):", evict, phases, perPhase)
		t.Logf("  scrape bytes per phase:      %v", sizes)
		t.Logf("  series per phase:            %v", series)
		t.Logf("  registry bytes per phase:    %v", mem)
		t.Logf("  end: live Go heap %.1f MB, interned peers %v, evicted %v", heap/1e6, gaugeOf(fams, "leanmesh_interned_peers"), gaugeOf(fams, "leanmesh_series_evicted_total"))
		final[evict] = []int64{sizes[phases-1], series[phases-1], mem[phases-1]}
		if evict {
			// Phases are at least 1 s apart and a series goes 2–2.5 s
			// after its last use, so a scrape holds at most three phases,
			// however the machine paces them: never more than three times
			// the first scrape (one phase plus the fixed families).
			for _, v := range [][]int64{sizes, series, mem} {
				for p := range v {
					if v[p] > 3*v[0] {
						t.Errorf("eviction on: phase %d holds more than three phases: %v", p, v)
						break
					}
				}
			}
		} else if series[phases-1] != phases*perPhase || sizes[phases-1] < 2*sizes[3] {
			t.Errorf("eviction off: want every series kept and the scrape growing: series %v sizes %v", series, sizes)
		}
		// The first client returns.
		id, v := mxPeer(t, "client-0")
		s.inboundFrom(t, id, v, time.Millisecond)
		body, _ = s.scrapeRaw(t, "")
		got := counterOf(t, parseText(t, body), "istio_requests_total", map[string]string{"source_workload": "client-0"})
		want := 2.0
		if evict {
			want = 1 // evicted, then counted from zero
		}
		t.Logf("  returning client-0: istio_requests_total %v", got)
		if got != want {
			t.Errorf("eviction=%v: returning peer counted %v, want %v", evict, got, want)
		}
	}
	t.Logf("last phase, eviction on vs off: scrape %d vs %d bytes, series %d vs %d, registry %d vs %d bytes",
		final[true][0], final[false][0], final[true][1], final[false][1], final[true][2], final[false][2])
}

func counterOf(t testing.TB, fams map[string]*dto.MetricFamily, family string, sel map[string]string) float64 {
	t.Helper()
	ms := series(fams, family, sel)
	if len(ms) != 1 {
		t.Fatalf("%s %v: %d series", family, sel, len(ms))
	}
	return ms[0].GetCounter().GetValue()
}

// TestHostilePeersBoundedMemory (#18): distinct peer headers by the tens of
// thousands with max_series 1000. The series are capped (the rest fold into
// overflow) and interned peers no longer accumulate: they are released with
// the peer caches that held them.
func TestHostilePeersBoundedMemory(t *testing.T) {
	const n = 50000
	// Histograms dropped so the scrape that reads the heap is ~1 MB, not
	// 55 MB (a GC during its rendering would count the body as live).
	s := startSidecar(t, reviews, 1, map[string]interface{}{"max_series": 1000, "metrics": dropHistograms})
	id, v := mxPeer(t, "warmup")
	s.inboundFrom(t, id, v, time.Millisecond)
	before := s.heapAfterGC(t)
	start := time.Now()
	for i := 0; i < n; i++ {
		id, v := mxPeer(t, fmt.Sprintf("attacker-%d", i))
		s.inboundFrom(t, id, v, time.Millisecond)
	}
	took := time.Since(start)
	// 1000 series plus each worker's peer cache (500) and its dimension map
	// (≤ 2×500+16) may hold peers; nothing else.
	const peerBound = 1000 + 500 + 1016 + 10
	var (
		after, peers float64
		body         []byte
		fams         map[string]*dto.MetricFamily
	)
	// Released peers leave the intern table in runtime.AddCleanup callbacks,
	// which run on their own goroutine after a GC: a busy machine may need
	// a few more collections before the gauge shows it.
	for round := 0; ; round++ {
		after = s.heapAfterGC(t)
		body, _ = s.scrapeRaw(t, "")
		fams = parseText(t, body)
		if peers = gaugeOf(fams, "leanmesh_interned_peers"); peers <= peerBound || round == 10 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%d distinct peers in %v: live heap %.1f MB -> %.1f MB (+%.1f MB), series %v, overflowed %v, interned peers %v, scrape %d bytes",
		n, took.Round(time.Millisecond), before/1e6, after/1e6, (after-before)/1e6, gaugeOf(fams, "leanmesh_series"),
		gaugeOf(fams, "leanmesh_series_overflow_records_total"), peers, len(body))
	if gaugeOf(fams, "leanmesh_series") > 1000 {
		t.Errorf("series cap not held")
	}
	if peers > peerBound {
		t.Errorf("interned peers %v: not released", peers)
	}
	if after-before > 40e6 {
		t.Errorf("heap grew %.1f MB for %d peers", (after-before)/1e6, n)
	}
}

// TestBudgetsThroughHost (#18): client-controlled label values (4 KB Host
// headers on the outbound side's Host fallback, a request-header dimension)
// against the label-length cap and the byte budgets.
func TestBudgetsThroughHost(t *testing.T) {
	const budget = 4 << 20
	s := startSidecar(t, productpage, 1, map[string]interface{}{
		"max_series_bytes": 2 << 20, "max_exposition_bytes": budget, "max_label_value_length": 256,
		"metrics": []interface{}{map[string]interface{}{"dimensions": map[string]interface{}{"user_agent": "request.headers['user-agent']"}}},
	})
	for i := 0; i < 2000; i++ {
		host := fmt.Sprintf("%d.%s", i, strings.Repeat("h", 4096))
		res, err := s.h.Run(&envoyhost.Request{Config: s.outbound,
			Headers:         envoyhost.H(":method", "GET", ":path", "/", ":authority", host, ":scheme", "http", "user-agent", fmt.Sprintf("ua-%d-%s", i, strings.Repeat("u", 2000))),
			Info:            envoyhost.StreamInfo{Protocol: "HTTP/1.1", UpstreamCluster: "PassthroughCluster", RequestDuration: time.Millisecond},
			ResponseHeaders: envoyhost.H(":status", "200")})
		if err != nil || res.Error != "" {
			t.Fatalf("request: %v %s", err, res.Error)
		}
	}
	body, _ := s.scrapeRaw(t, "")
	fams := parseText(t, body)
	longest := 0
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				longest = max(longest, len(lp.GetValue()))
			}
		}
	}
	t.Logf("2000 requests with 4 KB Host and 2 KB User-Agent values: scrape %d bytes (budget %d), series %v, registry %v bytes (budget %d), "+
		"folded by a byte budget %v, longest label value %d bytes, values truncated %v",
		len(body), budget, gaugeOf(fams, "leanmesh_series"), gaugeOf(fams, "leanmesh_series_bytes"), 2<<20,
		gaugeOf(fams, "leanmesh_series_overflow_budget_total"), longest, gaugeOf(fams, "leanmesh_label_values_truncated_total"))
	if len(body) > budget+64<<10 || longest > 256 || gaugeOf(fams, "leanmesh_series_overflow_budget_total") == 0 {
		t.Errorf("budgets not held")
	}
}

// TestHostileValuesParse (#18): request-derived label values with invalid
// UTF-8, control characters and exposition syntax, through a request-header
// dimension and the Host fallback; the scrape must parse with Prometheus'
// text parser (and with promtool in the real-Prometheus test).
func TestHostileValuesParse(t *testing.T) {
	s := startSidecar(t, productpage, 1, map[string]interface{}{
		"metrics": []interface{}{map[string]interface{}{"dimensions": map[string]interface{}{"user_agent": "request.headers['user-agent']"}}},
	})
	for i, v := range hostileHeaderValues {
		res, err := s.h.Run(&envoyhost.Request{Config: s.outbound,
			Headers:         envoyhost.H(":method", "GET", ":path", "/", ":authority", v, ":scheme", "http", "user-agent", v),
			Info:            envoyhost.StreamInfo{Protocol: "HTTP/1.1", UpstreamCluster: "PassthroughCluster", RequestDuration: time.Duration(i) * time.Millisecond},
			ResponseHeaders: envoyhost.H(":status", "200")})
		if err != nil || res.Error != "" {
			t.Fatalf("request %q: %v %s", v, err, res.Error)
		}
	}
	body, _ := s.scrapeRaw(t, "")
	fams := parseText(t, body)
	n := len(series(fams, "istio_requests_total", nil))
	t.Logf("%d hostile values -> %d series, all parsed; sanitised %v", len(hostileHeaderValues), n, gaugeOf(fams, "leanmesh_label_values_sanitized_total"))
	if n != len(hostileHeaderValues) {
		t.Errorf("series %d, want %d", n, len(hostileHeaderValues))
	}
}

// hostileHeaderValues are header values a client controls. (The host passes
// bytes as Envoy would after its codec: Envoy rejects NUL, CR and LF in
// header values, but not other control bytes or invalid UTF-8.)
var hostileHeaderValues = []string{
	"\xff\xfe", "tab\there", "esc\x1b[31mred", "del\x7f", "quote\"back\\slash", "c1\u0085ctl", "ok-ünïcödé",
	"x\xe2\x82", "le=\"1\"} 1", "} 1 istio_requests_total{} 9", "__name__",
}
