package dataplane

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/leanmesh/leanmesh/e2e/envoyhost"
	lmprom "github.com/leanmesh/leanmesh/e2e/prometheus"
	"github.com/leanmesh/leanmesh/filters/telemetry"
	"github.com/leanmesh/leanmesh/monitoring"
)

// checkBytesAndMessages sends HTTP requests with bodies, then gRPC calls
// with several messages each way, in LeanMesh mode, and checks against what
// was sent: Istio's request/response size panels (monitoring/istio, verbatim)
// for both reporters, the exact byte totals behind them, the gRPC message
// counters, and Kiali's gRPC edge queries (monitoring/kiali). It returns the
// number of requests sent.
//
// A request's size is Istio's: header bytes (Envoy's HeaderMap byteSize,
// the sum of key and value lengths of the map at log time) plus body bytes.
// Each reporter sees its own map: the client's request carries the exchanged
// metadata it added, the server's request no longer does (it removed it
// before the app), and the reverse for responses.
func checkBytesAndMessages(t *testing.T, srv *lmprom.Server, client, server *sidecar) float64 {
	t.Helper()
	byteSize := func(h envoyhost.Headers) float64 {
		n := 0
		for _, kv := range h {
			n += len(kv[0]) + len(kv[1])
		}
		return float64(n)
	}
	type sizes struct{ srcReq, srcResp, dstReq, dstResp []float64 }
	var got sizes
	httpReq := func(i, reqBody, respBody int) {
		x := reviewsExchange(fmt.Sprintf("/bytes/%d", i))
		x.clientReq.Headers = append(x.clientReq.Headers, [2]string{"content-length", fmt.Sprint(reqBody)})
		x.clientReq.Body = [][]byte{make([]byte, reqBody)}
		x.serverReq.Body = x.clientReq.Body
		x.respHeaders = append(x.respHeaders, [2]string{"content-length", fmt.Sprint(respBody)})
		x.respBody = [][]byte{make([]byte, respBody)}
		o := relay(t, client, server, x)
		got.srcReq = append(got.srcReq, byteSize(o.upstream)+float64(reqBody))
		got.dstReq = append(got.dstReq, byteSize(o.appRequest)+float64(reqBody))
		got.dstResp = append(got.dstResp, byteSize(o.serverResp)+float64(respBody))
		got.srcResp = append(got.srcResp, byteSize(o.appResponse)+float64(respBody))
	}
	httpReq(-1, 10, 10) // every series exists before the batch

	// The batch: 10 requests, bodies spread over several of Envoy's buckets.
	const n = 10
	bytesCount := func(r string) string {
		return `istio_request_bytes_count{reporter="` + r + `",destination_workload="reviews-v2",response_code="200",request_protocol="http"}`
	}
	batches := sendBetweenScrapes(t, srv, func(int) {
		got = sizes{} // the sizes of the batch the irate panels see
		for i := 0; i < n; i++ {
			httpReq(i, 300+i*400, 2000+i*1500)
		}
	}, n, bytesCount("source"), bytesCount("destination"))
	// Each reporter is its own target, scraped at its own phase: each is read
	// at the first of its own scrapes with the batch.
	scrapes := map[string][2]model.Time{}
	for _, r := range []string{"source", "destination"} {
		t0, t1 := batchScrapes(t, srv, bytesCount(r), n)
		scrapes[r] = [2]model.Time{t0, t1}
	}

	_, queries, err := monitoring.IstioQueries("../../monitoring/istio/dashboards.json")
	if err != nil {
		t.Fatal(err)
	}
	find := func(panel, prefix, contains string) string {
		for _, q := range queries {
			if q.Dashboard == "istio-workload-dashboard.json" && q.Panel == panel && strings.HasPrefix(q.Expr, prefix) && strings.Contains(q.Expr, contains) {
				return q.Expr
			}
		}
		t.Fatalf("no query for panel %q with %q and %q in monitoring/istio/dashboards.json", panel, prefix, contains)
		return ""
	}
	// The reviews-v2 workload page for incoming, the productpage-v1 page for outgoing.
	in := strings.NewReplacer("$qrep", "destination", "$namespace", "bookinfo", "$workload", "reviews-v2",
		"$srcwl", "productpage-v1", "$srcns", "bookinfo", "$dstsvc", ".*", "$__rate_interval", "1m")
	out := strings.NewReplacer("$qrep", "source", "$namespace", "bookinfo", "$workload", "productpage-v1",
		"$srcwl", ".*", "$srcns", ".*", "$dstsvc", "reviews.bookinfo.svc.cluster.local", "$__rate_interval", "1m")
	// Each panel has an mTLS and a non-mTLS query. The server reports
	// mutual_tls; the client reports connection_security_policy="unknown" as
	// Istio's stats filter does (istio_stats.cc sets it on inbound only), so
	// on the outgoing panels the traffic is in the non-mTLS query.
	mtls, notMTLS := `connection_security_policy="mutual_tls"`, `connection_security_policy!="mutual_tls"`
	for _, c := range []struct {
		panel, policy string
		vars          *strings.Replacer
		sizes         []float64
		metric        string
		reporter      string
	}{
		{"Incoming Request Size By Source", mtls, in, got.dstReq, "istio_request_bytes", "destination"},
		{"Response Size By Source", mtls, in, got.dstResp, "istio_response_bytes", "destination"},
		{"Outgoing Request Size By Destination", notMTLS, out, got.srcReq, "istio_request_bytes", "source"},
		{"Response Size By Destination", notMTLS, out, got.srcResp, "istio_response_bytes", "source"},
	} {
		t1 := scrapes[c.reporter][1]
		dt := t1.Sub(scrapes[c.reporter][0]).Seconds()
		for _, q := range []float64{0.50, 0.90, 0.99} {
			expr := c.vars.Replace(find(c.panel, fmt.Sprintf("histogram_quantile(%.2f,", q), c.policy))
			want := envoyQuantile(q, c.sizes)
			if v := queryOne(t, srv, expr, t1); math.Abs(v-want) > 1e-6*math.Max(1, want) {
				t.Errorf("%s P%.0f = %v, want %v (sizes sent %v)\n%s", c.panel, q*100, v, want, c.sizes, expr)
			} else {
				t.Logf("%-38s P%-2.0f = %-8.6g (sent: %.6g)", c.panel, q*100, v, want)
			}
		}
		// The totals behind the panel: exactly the bytes sent.
		var sum float64
		for _, s := range c.sizes {
			sum += s
		}
		expr := fmt.Sprintf(`sum(irate(%s_sum{reporter=%q,source_workload="productpage-v1",destination_workload="reviews-v2"}[1m])) * %v`, c.metric, c.reporter, dt)
		if v := queryOne(t, srv, expr, t1); math.Abs(v-sum) > 1e-6*sum {
			t.Errorf("%s{reporter=%s} total = %v bytes, want %v (sizes %v)", c.metric, c.reporter, v, sum, c.sizes)
		} else {
			t.Logf("%s{reporter=%s} total over the batch = %v bytes (sent: %v)", c.metric, c.reporter, v, sum)
		}
	}

	// gRPC: g calls, each 2 request messages and 3 response messages, with
	// grpc-status in the trailers. Istio's dashboards have no message panel;
	// Kiali's graph reads the message counters (grpc-sent-*, grpc-received-*).
	msg := func(size int) []byte { return append([]byte{0, 0, 0, 0, byte(size)}, make([]byte, size)...) }
	call := func(i int) {
		x := reviewsExchange(fmt.Sprintf("/reviews.Reviews/Get%d", i))
		x.clientReq.Headers = append(x.clientReq.Headers, [2]string{"content-type", "application/grpc"})
		x.clientReq.Body = [][]byte{append(msg(3), msg(4)...)}
		x.serverReq.Body = x.clientReq.Body
		x.respHeaders = envoyhost.H(":status", "200", "content-type", "application/grpc")
		x.respBody = [][]byte{append(append(msg(5), msg(6)...), msg(7)...)}
		x.respTrail = envoyhost.H("grpc-status", "0")
		relay(t, client, server, x)
	}
	call(-1)
	const g = 10
	reqMessages := func(r string) string {
		return `istio_request_messages_total{reporter="` + r + `",destination_workload="reviews-v2"}`
	}
	calls := sendBetweenScrapes(t, srv, func(int) {
		for i := 0; i < g; i++ {
			call(i)
		}
	}, 2*g, reqMessages("source"), reqMessages("destination"))
	for _, r := range []string{"source", "destination"} {
		t0, t1 := batchScrapes(t, srv, reqMessages(r), 2*g)
		scrapes[r] = [2]model.Time{t0, t1}
	}
	for _, c := range []struct {
		metric, reporter string
		want             float64
	}{
		{"istio_request_messages_total", "source", 2 * g},
		{"istio_request_messages_total", "destination", 2 * g},
		{"istio_response_messages_total", "source", 3 * g},
		{"istio_response_messages_total", "destination", 3 * g},
	} {
		t1, dt := scrapes[c.reporter][1], scrapes[c.reporter][1].Sub(scrapes[c.reporter][0]).Seconds()
		expr := fmt.Sprintf(`sum(irate(%s{reporter=%q,source_workload="productpage-v1",destination_workload="reviews-v2"}[1m])) * %v`, c.metric, c.reporter, dt)
		if v := queryOne(t, srv, expr, t1); math.Abs(v-c.want) > 1e-6*c.want {
			t.Errorf("%s{reporter=%s} over the batch = %v, want %v", c.metric, c.reporter, v, c.want)
		} else {
			t.Logf("%s{reporter=%s} over the batch = %v (sent: %v)", c.metric, c.reporter, v, c.want)
		}
	}
	t1, dt := scrapes["destination"][1], scrapes["destination"][1].Sub(scrapes["destination"][0]).Seconds()
	if v := queryOne(t, srv, `sum(irate(istio_requests_total{request_protocol="grpc",grpc_response_status="0",reporter="destination",destination_workload="reviews-v2"}[1m])) * `+fmt.Sprint(dt), t1); math.Abs(v-g) > 1e-6*g {
		t.Errorf("gRPC calls with status 0 over the batch = %v, want %v", v, g)
	}
	_, grouping, kqs, err := monitoring.KialiQueries("../../monitoring/kiali/graph-queries.json")
	if err != nil {
		t.Fatal(err)
	}
	kvars := strings.NewReplacer("$namespace", "bookinfo", "$duration", "60")
	for _, name := range []string{"grpc-sent-incoming", "grpc-sent-outgoing", "grpc-received-incoming"} {
		var expr string
		for _, q := range kqs {
			if q.Name == name {
				expr = kvars.Replace(q.Expr)
			}
		}
		if expr == "" {
			t.Fatalf("no kiali query %s", name)
		}
		// Read once both reporters' scrapes hold the batch.
		v, err := srv.QueryAt(t.Context(), expr, max(scrapes["source"][1], scrapes["destination"][1]).Time())
		if err != nil {
			t.Fatal(err)
		}
		vec, _ := v.(model.Vector)
		edge := 0
		for _, s := range vec {
			for _, l := range grouping {
				if _, ok := s.Metric[model.LabelName(l)]; !ok && l != "grpc_response_status" && l != "response_code" && l != "request_protocol" && l != "response_flags" {
					t.Errorf("kiali %s: sample %v lacks %s", name, s.Metric, l)
				}
			}
			if s.Metric["source_workload"] == "productpage-v1" && s.Metric["destination_workload"] == "reviews-v2" && s.Value > 0 {
				edge++
			}
		}
		if edge != 1 {
			t.Errorf("kiali %s: %d productpage-v1 → reviews-v2 edges, want 1\n%v", name, edge, vec)
		} else {
			t.Logf("kiali %-22s: edge productpage-v1 → reviews-v2 present", name)
		}
	}
	return float64(1 + batches*n + 1 + calls*g)
}

// batchScrapes finds the two scrapes around a batch: t1 is the first sample
// in which the counter (one series) grew by delta, t0 the one before it.
// Istio's panels use irate, which at t1 sees exactly these two samples.
func batchScrapes(t *testing.T, srv *lmprom.Server, series string, delta float64) (t0, t1 model.Time) {
	t.Helper()
	t0, t1, err := batchStep(t, srv, series, delta)
	if err != nil {
		t.Fatal(err)
	}
	return t0, t1
}

// batchStep is batchScrapes without failing: the error says how the samples
// differ from one step of delta.
func batchStep(t *testing.T, srv *lmprom.Server, series string, delta float64) (t0, t1 model.Time, err error) {
	t.Helper()
	raw, err := srv.Query(t.Context(), series+"[2m]")
	if err != nil {
		t.Fatal(err)
	}
	m, ok := raw.(model.Matrix)
	if !ok || len(m) != 1 {
		name, _, _ := strings.Cut(series, "{")
		all, _ := srv.Query(t.Context(), name)
		t.Fatalf("%s: raw samples %v, want one series; all %s: %v", series, raw, name, all)
	}
	vs := m[0].Values
	final := vs[len(vs)-1].Value
	for i := 1; i < len(vs); i++ {
		if vs[i].Value == final {
			if float64(vs[i].Value-vs[i-1].Value) != delta {
				return 0, 0, fmt.Errorf("%s: samples %v, want one step of %v (the batch)", series, vs, delta)
			}
			return vs[i-1].Timestamp, vs[i].Timestamp, nil
		}
	}
	return 0, 0, fmt.Errorf("%s: samples %v, no step of %v", series, vs, delta)
}

// sendBetweenScrapes sends a batch right after a scrape and waits for the
// next, until every series grew by exactly delta in one scrape step. On a
// busy machine a batch through the C hosts can outlast the scrape interval
// and be split over two scrapes; it is then sent again (at most three
// times in all). It returns the batches sent; send gets the attempt number.
func sendBetweenScrapes(t *testing.T, srv *lmprom.Server, send func(attempt int), delta float64, series ...string) int {
	t.Helper()
	for attempt := 1; ; attempt++ {
		srv.WaitScrapedT(t, monitoring.Proxies.Job, time.Now())
		send(attempt)
		srv.WaitScrapedT(t, monitoring.Proxies.Job, time.Now())
		var split error
		for _, s := range series {
			if _, _, err := batchStep(t, srv, s, delta); err != nil {
				split = err
				break
			}
		}
		if split == nil {
			return attempt
		}
		if attempt == 3 {
			t.Fatalf("the batch was split over scrapes %d times: %v", attempt, split)
		}
		t.Logf("batch %d split over two scrapes (busy machine), sending it again: %v", attempt, split)
	}
}

func queryOne(t *testing.T, srv *lmprom.Server, expr string, at model.Time) float64 {
	t.Helper()
	v, err := srv.QueryAt(t.Context(), expr, at.Time())
	if err != nil {
		t.Fatal(err)
	}
	vec, ok := v.(model.Vector)
	if !ok || len(vec) != 1 {
		t.Fatalf("%s: %v, want one sample", expr, v)
	}
	return float64(vec[0].Value)
}

// envoyQuantile is what histogram_quantile returns for these observations in
// Envoy's default buckets (promql/quantile.go bucketQuantile: linear
// interpolation inside the bucket holding the rank, from 0 for the first).
func envoyQuantile(q float64, obs []float64) float64 {
	bounds := append(append([]float64{}, telemetry.DefaultBuckets...), math.Inf(1))
	sort.Float64s(bounds)
	counts := make([]float64, len(bounds))
	for _, o := range obs {
		for i, b := range bounds {
			if o <= b {
				counts[i]++
			}
		}
	}
	rank := q * counts[len(counts)-1]
	i := sort.Search(len(counts), func(i int) bool { return counts[i] >= rank })
	if i == len(bounds)-1 {
		return bounds[len(bounds)-2]
	}
	start, before := 0.0, 0.0
	if i > 0 {
		start, before = bounds[i-1], counts[i-1]
	}
	return start + (bounds[i]-start)*(rank-before)/(counts[i]-before)
}
