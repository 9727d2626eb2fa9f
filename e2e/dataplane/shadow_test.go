package dataplane

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/compare"
)

// TestShadowObservesIstioExchange: with the Shadow configs the controller
// renders (metadata_exchange observe, leanmesh_shadow_ names), leanmesh
// records the peers Istio's own exchange delivers. Without that exchange
// (the C host alone) both sides record unknown peers; with the stand-in for
// Istio's filter (istioMX) every label matches what Istio's stats filter
// reports for the edge, and `compare` (auto-detecting Shadow mode, stripping
// the prefix) matches leanmesh's series with that expectation.
func TestShadowObservesIstioExchange(t *testing.T) {
	cfgs := renderedConfigs(t, v1alpha1.ModeShadow)
	start := func() (client, server *sidecar) {
		client, server = startSidecar(t, productpage, 1, nil), startSidecar(t, reviews, 1, nil)
		for _, s := range []*sidecar{client, server} {
			s.inbound, s.outbound = loadConfig(t, s, cfgs.inbound), loadConfig(t, s, cfgs.outbound)
		}
		return client, server
	}

	t.Run("without Istio's exchange", func(t *testing.T) {
		client, server := start()
		o := relay(t, client, server, reviewsExchange("/alone"))
		if has(o.upstream, mxHeader) || has(o.serverResp, mxHeader) {
			t.Fatalf("observe mode must not send exchange headers: %v / %v", o.upstream, o.serverResp)
		}
		for _, s := range []*sidecar{client, server} {
			ms := series(s.scrape(t), "leanmesh_shadow_istio_requests_total", nil)
			if len(ms) == 0 {
				t.Fatal("no Shadow series recorded")
			}
			for _, m := range ms {
				if ls := labelsOf(m); ls["source_workload"] != "unknown" && ls["destination_workload"] != "unknown" {
					t.Errorf("a peer label without any exchange: %v", ls)
				}
			}
		}
	})

	t.Run("with Istio's exchange", func(t *testing.T) {
		client, server := start()
		client.istioMX, server.istioMX = newIstioMX(t, productpage, client.id), newIstioMX(t, reviews, server.id)
		const n = 3
		for i := 0; i < n; i++ {
			o := relay(t, client, server, reviewsExchange(fmt.Sprintf("/shadow/%d", i)))
			if id, _ := o.upstream.Get(mxIDHeader); id != client.id {
				t.Fatalf("Istio's exchange must send the client's id: %v", o.upstream)
			}
			if id, _ := o.serverResp.Get(mxIDHeader); id != server.id {
				t.Fatalf("Istio's exchange must answer with the server's id: %v", o.serverResp)
			}
			if has(o.appRequest, mxHeader) || has(o.appResponse, mxHeader) {
				t.Fatalf("an app saw exchange headers: %v / %v", o.appRequest, o.appResponse)
			}
		}
		for _, side := range []struct {
			s        *sidecar
			reporter string
		}{{client, "source"}, {server, "destination"}} {
			fams := side.s.scrape(t)
			if fams["istio_requests_total"] != nil {
				t.Errorf("%s: Shadow served istio_requests_total under Istio's name", side.reporter)
			}
			got := series(fams, "leanmesh_shadow_istio_requests_total", nil)
			if len(got) != 1 {
				t.Fatalf("%s: %d shadow request series, want 1: %v", side.reporter, len(got), got)
			}
			ls := labelsOf(got[0])
			for k, v := range reviewsEdgeLabels(side.reporter, "200") {
				if ls[k] != v {
					t.Errorf("%s: %s = %q, want %q (Istio's value)", side.reporter, k, ls[k], v)
				}
			}

			// compare, as `leanmesh compare --mode auto` runs it, against what
			// Istio's filter reports for the same requests (its labels per
			// istio_stats.cc, the count sent): not Istio's measured output,
			// which needs an Envoy.
			var istio strings.Builder
			istio.WriteString("# TYPE istio_requests_total counter\nistio_requests_total{")
			want := reviewsEdgeLabels(side.reporter, "200")
			keys := make([]string, 0, len(want))
			for k := range want {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for i, k := range keys {
				if i > 0 {
					istio.WriteString(",")
				}
				fmt.Fprintf(&istio, "%s=%q", k, want[k])
			}
			fmt.Fprintf(&istio, "} %d\n", n)
			rep, err := compare.Compare(strings.NewReader(istio.String()), bytes.NewReader(side.s.scrapeText(t)),
				compare.Options{Prefixes: []string{"istio_requests_total"}})
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			rep.Write(&out, "istio", "leanmesh")
			if rep.Mode != compare.ModeShadow || !rep.OK() || rep.Compared != 1 {
				t.Errorf("%s: compare: mode %s, OK %v, %d compared:\n%s", side.reporter, rep.Mode, rep.OK(), rep.Compared, out.String())
			} else {
				t.Logf("%s: compare: %s", side.reporter, strings.TrimSpace(out.String()))
			}
		}
	})
}
