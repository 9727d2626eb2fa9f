package dataplane

import (
	"bytes"
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/leanmesh/leanmesh/controller/compare"
	"github.com/leanmesh/leanmesh/e2e/envoyhost"
	lmprom "github.com/leanmesh/leanmesh/e2e/prometheus"
	"github.com/leanmesh/leanmesh/filters/peer"
	"github.com/leanmesh/leanmesh/monitoring"
)

// checkShadowCountsOnce runs in Shadow mode, the sidecars running the
// controller's Shadow configs next to the stand-in for Istio's own exchange
// (istioMX), after the loop's `loop` requests answered 200.
//
// What stands in for what: Istio's stats filter (C++, served on :15020)
// cannot run in this host, so this Prometheus holds no series of Istio's own;
// nothing here pretends otherwise. In Shadow mode Istio's filter keeps
// counting every request under istio_*, so a request is counted once exactly
// when nothing leanmesh serves is matched by Istio's queries. That is what is
// measured, in the real Prometheus, while Shadow traffic flows:
//   - sum(rate(istio_requests_total[1m])) over everything scraped from
//     leanmesh is exactly 0 (the only istio_requests_total series left on
//     :15095 are LeanMesh mode's, flat since the switch);
//   - the workload dashboard's request-volume panel, run verbatim, reads 0,
//     and the same query on leanmesh_shadow_istio_requests_total reads the
//     batch's rate: the panel would double the traffic if the names matched;
//   - leanmesh's Shadow series carry the real peers on both reporters (grown
//     by exactly the batch), and `compare` detects Shadow mode, strips the
//     prefix and matches them with the series Istio's filter reports for the
//     same requests (their labels per istio_stats.cc and the counts sent:
//     expected values, not Istio's measured output).
//
// It returns the number of requests sent.
func checkShadowCountsOnce(t *testing.T, srv *lmprom.Server, client, server *sidecar, leanEnd time.Time, loop int) float64 {
	t.Helper()
	send := func(path, code string) {
		x := reviewsExchange(path)
		x.respHeaders = envoyhost.H(":status", code, "content-type", "application/json")
		relay(t, client, server, x)
	}
	sent200, sent201 := loop, 0
	send("/shadow/warm", "201") // the 201 series exists before the batch
	sent201++
	// Shadow traffic until Istio's one-minute rate window no longer reaches
	// back into LeanMesh mode (whose requests are rightly under istio_*).
	for i := 0; time.Now().Before(leanEnd.Add(65 * time.Second)); i++ {
		send(fmt.Sprintf("/shadow/fill/%d", i), "200")
		sent200++
		time.Sleep(2 * time.Second)
	}
	const k = 10
	// Both reporters' Shadow series for the edge grow by exactly the batch:
	// the peers came through Istio's exchange (no "unknown").
	edge := `source_workload="productpage-v1",source_workload_namespace="bookinfo",destination_workload="reviews-v2",destination_workload_namespace="bookinfo",destination_service_namespace="bookinfo",response_code="201"`
	batches := sendBetweenScrapes(t, srv, func(attempt int) {
		for i := 0; i < k; i++ {
			send(fmt.Sprintf("/shadow/batch/%d/%d", attempt, i), "201")
		}
	}, k, `leanmesh_shadow_istio_requests_total{reporter="destination",`+edge+`}`, `leanmesh_shadow_istio_requests_total{reporter="source",`+edge+`}`)
	sent201 += batches * k
	t0, t1 := batchScrapes(t, srv, `leanmesh_shadow_istio_requests_total{reporter="destination",`+edge+`}`, k)
	_, t1src := batchScrapes(t, srv, `leanmesh_shadow_istio_requests_total{reporter="source",`+edge+`}`, k)
	at := max(t1, t1src)
	dt := t1.Sub(t0).Seconds()

	zero := func(name, expr string) {
		v, err := srv.QueryAt(t.Context(), expr, at.Time())
		if err != nil {
			t.Fatal(err)
		}
		vec, _ := v.(model.Vector)
		for _, s := range vec {
			if s.Value != 0 {
				t.Errorf("Shadow: %s = %v, want 0 (leanmesh's Shadow traffic matched by Istio's query)\n%s", name, vec, expr)
				return
			}
		}
		t.Logf("Shadow: %-44s = 0 over leanmesh's targets (%d samples)", name, len(vec))
	}
	zero("sum(rate(istio_requests_total[1m]))", `sum(rate(istio_requests_total[1m]))`)
	if v := queryOne(t, srv, `sum(rate(leanmesh_shadow_istio_requests_total[1m]))`, at); v <= 0 {
		t.Errorf("Shadow: sum(rate(leanmesh_shadow_istio_requests_total[1m])) = %v, want > 0", v)
	} else {
		t.Logf("Shadow: %-44s = %.4g", "sum(rate(leanmesh_shadow_istio_requests_total[1m]))", v)
	}

	_, queries, err := monitoring.IstioQueries("../../monitoring/istio/dashboards.json")
	if err != nil {
		t.Fatal(err)
	}
	var volume string
	for _, q := range queries {
		if q.Dashboard == "istio-workload-dashboard.json" && q.Panel == "Incoming Request Volume" {
			volume = q.Expr
		}
	}
	if volume == "" {
		t.Fatal("no Incoming Request Volume query in monitoring/istio/dashboards.json")
	}
	volume = strings.NewReplacer("$qrep", "destination", "$namespace", "bookinfo", "$workload", "reviews-v2", "$__rate_interval", "1m").Replace(volume)
	zero("Incoming Request Volume (workload dashboard)", volume)
	renamed := strings.ReplaceAll(volume, "istio_requests_total", "leanmesh_shadow_istio_requests_total")
	if v, want := queryOne(t, srv, renamed, t1), math.Round(k/dt/0.001)*0.001; math.Abs(v-want) > 1e-9*want {
		t.Errorf("Shadow: the volume panel on leanmesh's names = %v, want %v (%d requests in %.3fs)", v, want, k, dt)
	} else {
		t.Logf("Shadow: the volume panel on leanmesh_shadow_ names = %v (batch: %d requests in %.3fs): what it would add if matched", v, k, dt)
	}

	// compare finds them: per sidecar, the Shadow exposition against the
	// series Istio's filter reports for the same requests.
	for _, side := range []struct {
		s        *sidecar
		reporter string
	}{{client, "source"}, {server, "destination"}} {
		var istio strings.Builder
		istio.WriteString("# TYPE istio_requests_total counter\n")
		for code, n := range map[string]int{"200": sent200, "201": sent201} {
			want := reviewsEdgeLabels(side.reporter, code)
			keys := make([]string, 0, len(want))
			for k := range want {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			var ls []string
			for _, k := range keys {
				ls = append(ls, fmt.Sprintf("%s=%q", k, want[k]))
			}
			fmt.Fprintf(&istio, "istio_requests_total{%s} %d\n", strings.Join(ls, ","), n)
		}
		rep, err := compare.Compare(strings.NewReader(istio.String()), bytes.NewReader(side.s.scrapeText(t)),
			compare.Options{Prefixes: []string{"istio_requests_total"}})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		rep.Write(&out, "istio", "leanmesh")
		if rep.Mode != compare.ModeShadow || !rep.OK() || rep.Compared != 2 {
			t.Errorf("Shadow %s: compare: mode %s, OK %v, %d compared:\n%s", side.reporter, rep.Mode, rep.OK(), rep.Compared, out.String())
		} else {
			t.Logf("Shadow %s: compare (auto): %s", side.reporter, strings.TrimSpace(out.String()))
		}
	}
	return float64(sent200 - loop + sent201)
}

// checkMalformedPeer (LeanMesh mode): requests whose peer headers are
// malformed reach the server sidecar. Each is recorded with an unknown
// source, ignored as a peer and counted in
// leanmesh_errors_total{kind="peer_metadata_invalid"}, and the scrape the
// real Prometheus takes right after still parses (the target stays up with
// its samples). It returns the number of requests sent.
func checkMalformedPeer(t *testing.T, srv *lmprom.Server, server *sidecar, pod string) float64 {
	t.Helper()
	target := `job="` + monitoring.Proxies.Job + `",pod="` + pod + `"`
	errs := `sum(leanmesh_errors_total{kind="peer_metadata_invalid",` + target + `})`
	unknown := `sum(istio_requests_total{reporter="destination",` + target + `,source_workload="unknown",destination_workload="reviews-v2"})`
	value := func(expr string) float64 {
		v := srv.QueryVectorT(t, expr)
		if len(v) == 0 {
			return 0
		}
		return float64(v[0].Value)
	}
	srv.WaitScrapedT(t, monitoring.Proxies.Job, time.Now())
	errs0, unknown0 := value(errs), value(unknown)
	wrongType, err := peer.Encode(&structpb.Struct{Fields: map[string]*structpb.Value{"NAMESPACE": structpb.NewNumberValue(5)}})
	if err != nil {
		t.Fatal(err)
	}
	bad := []string{
		"!!!not-base64!!!",               // not base64
		"//79/A==",                       // base64 of bytes that are no protobuf Struct
		strings.Repeat("QUFB", 9*1024/4), // over the 8 KiB bound
		wrongType,                        // a Struct with a number where Istio sends a string
	}
	for i, v := range bad {
		server.inboundFrom(t, fmt.Sprintf("bogus-%d", i), v, time.Millisecond)
	}
	srv.WaitScrapedT(t, monitoring.Proxies.Job, time.Now())
	n := float64(len(bad))
	if d := value(errs) - errs0; d != n {
		t.Errorf("malformed peers: peer_metadata_invalid grew by %v, want %v", d, n)
	}
	if d := value(unknown) - unknown0; d != n {
		t.Errorf("malformed peers: requests with source_workload=unknown grew by %v, want %v (recorded, peer ignored)", d, n)
	}
	if v := srv.QueryVectorT(t, `up{`+target+`} * on (pod) scrape_samples_scraped{`+target+`}`); len(v) != 1 || v[0].Value <= 0 {
		t.Errorf("malformed peers: the scrape after them did not parse: %v", v)
	} else {
		t.Logf("malformed peers: %v sent, counted in peer_metadata_invalid (+%v), recorded as source unknown (+%v); next scrape up with %v samples",
			n, value(errs)-errs0, value(unknown)-unknown0, v[0].Value)
	}
	return n
}
