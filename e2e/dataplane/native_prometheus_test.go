package dataplane

import (
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	lmprom "github.com/leanmesh/leanmesh/e2e/prometheus"
)

// latencyMix is the traffic of TestNativeHistogramsWithPrometheus: request
// durations placed so that the quantiles asked for fall on classic bucket
// bounds (Envoy's defaults), where the classic estimate is exact: p50 = 1,
// p90 = 10, p99 = 100 ms. The native estimate then differs from it by at most
// the schema's bucket width.
var latencyMix = []struct {
	ms    int
	count int
}{{1, 50}, {10, 40}, {100, 9}, {1000, 1}}

// TestNativeHistogramsWithPrometheus: the real Prometheus (Debian v2.42)
// scrapes the library twice over, once with --enable-feature=native-histograms
// (it negotiates the protobuf exposition and gets native histograms) and
// once without (text, classic buckets), on the same traffic. histogram_quantile
// over the native histogram agrees with the classic one within the schema's
// error bound, the shipped native recording rules evaluate to the same, and
// the native Prometheus stores 4 series for the edge instead of 67. Hostile
// label values ride along; both scrapes stay up.
func TestNativeHistogramsWithPrometheus(t *testing.T) {
	const schema = 3
	bound := math.Exp2(math.Exp2(-schema)) - 1 // relative width of one bucket: 9.05%
	s := startSidecar(t, reviews, 1, map[string]interface{}{
		"native_histograms": map[string]interface{}{"schema": schema},
		"metrics":           []interface{}{map[string]interface{}{"dimensions": map[string]interface{}{"user_agent": "request.headers['user-agent']"}}},
	})
	addr := s.serveScrapes(t)
	_, file, _, _ := runtime.Caller(0)
	rules := filepath.Join(filepath.Dir(file), "..", "..", "docs", "prometheus", "native-histograms.rules.yml")
	if out, err := exec.Command("promtool", "check", "rules", rules).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	native := lmprom.StartT(t, lmprom.Options{NativeHistograms: true, ScrapeConfigs: []string{lmprom.StaticJob("leanmesh", addr)}, RuleFiles: []string{rules}})
	classic := lmprom.StartT(t, lmprom.Options{ScrapeConfigs: []string{lmprom.StaticJob("leanmesh", addr)}})

	id, v := mxPeer(t, "client")
	send := func() {
		for _, m := range latencyMix {
			for i := 0; i < m.count; i++ {
				s.inboundFrom(t, id, v, time.Duration(m.ms)*time.Millisecond)
			}
		}
		for _, hv := range hostileHeaderValues {
			hid, hval := mxPeer(t, "hostile")
			s.inboundFrom(t, hid, hval, time.Millisecond, "user-agent", hv)
		}
	}
	// Two rounds of the same mix, each scraped, so rate() over the window
	// sees the mix too.
	for round := 0; round < 2; round++ {
		since := time.Now()
		send()
		native.WaitScrapedT(t, "leanmesh", since)
		classic.WaitScrapedT(t, "leanmesh", since)
	}
	for _, p := range []*lmprom.Server{native, classic} {
		if v := p.QueryVectorT(t, `up{job="leanmesh"}`); len(v) != 1 || v[0].Value != 1 {
			t.Fatalf("scrape not up: %v", v)
		}
	}
	sel := `{reporter="destination",source_workload="client"}`
	one := func(p *lmprom.Server, q string) float64 {
		t.Helper()
		v := p.QueryVectorT(t, q)
		if len(v) != 1 {
			t.Fatalf("%s: %d samples: %v", q, len(v), v)
		}
		return float64(v[0].Value)
	}
	for _, q := range []float64{0.5, 0.9, 0.99} {
		n := one(native, fmt.Sprintf(`histogram_quantile(%g, istio_request_duration_milliseconds%s)`, q, sel))
		c := one(classic, fmt.Sprintf(`histogram_quantile(%g, sum by (le) (istio_request_duration_milliseconds_bucket%s))`, q, sel))
		diff := math.Abs(n-c) / c
		t.Logf("p%g: native %.4g ms, classic %.4g ms, relative difference %.2f%% (schema %d bound %.2f%%)", q*100, n, c, 100*diff, schema, 100*bound)
		if diff > bound {
			t.Errorf("p%g: native %v vs classic %v: %.2f%% > %.2f%%", q*100, n, c, 100*diff, 100*bound)
		}
	}
	// The shipped recording rules (rate over the window, sum by workload).
	time.Sleep(3 * time.Second) // a rule evaluation after the last scrape
	p99 := one(native, `destination_workload:istio_request_duration_milliseconds:p99{reporter="destination"}`)
	c99 := one(classic, `histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{reporter="destination"}[1m])))`)
	t.Logf("recorded native p99 (rules file) %.4g ms, classic rate-based p99 %.4g ms", p99, c99)
	if math.Abs(p99-c99)/c99 > bound {
		t.Errorf("recorded p99 %v vs classic %v", p99, c99)
	}
	mean := one(native, `destination_workload:istio_request_duration_milliseconds:mean{reporter="destination"}`)
	t.Logf("recorded mean %.4g ms", mean)
	if mean <= 0 {
		t.Errorf("mean %v", mean)
	}
	// Series per edge as each Prometheus stores them.
	nSeries := one(native, `count({__name__=~"istio_.*",reporter="destination",source_workload="client"})`)
	cSeries := one(classic, `count({__name__=~"istio_.*",reporter="destination",source_workload="client"})`)
	t.Logf("series stored for the edge: native %v, classic %v", nSeries, cSeries)
	if nSeries != 4 || cSeries != 67 {
		t.Errorf("series per edge: native %v (want 4), classic %v (want 67)", nSeries, cSeries)
	}
	if v := native.QueryVectorT(t, `count({__name__="istio_request_duration_milliseconds_bucket"})`); len(v) != 0 {
		t.Errorf("the native Prometheus got classic buckets: %v", v)
	}
	// Hostile label values arrived, sanitised, on both.
	h := one(classic, `count(istio_requests_total{source_workload="hostile"})`)
	hn := one(native, `count(istio_requests_total{source_workload="hostile"})`)
	t.Logf("hostile-value series scraped: text %v, protobuf %v", h, hn)
	if int(h) != len(hostileHeaderValues) || h != hn {
		t.Errorf("hostile series: text %v protobuf %v, want %d", h, hn, len(hostileHeaderValues))
	}
}
