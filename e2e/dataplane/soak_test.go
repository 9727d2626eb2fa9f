package dataplane

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/leanmesh/leanmesh/e2e/envoyhost"
	"github.com/leanmesh/leanmesh/e2e/soak"
)

// TestSoakProxy drives honest and hostile traffic through two real
// libraries (client and server sidecars in the C host) for LEANMESH_SOAK,
// and prints the server's live Go heap, series, interned peers and
// scrape size every interval. Hostile traffic: a new peer identity per
// request, Host values at the label cap, invalid UTF-8 in a request
// header, and MX headers without a value. Honest traffic is counted on
// both sides; a request the exposition does not count is a loss.
func TestSoakProxy(t *testing.T) {
	total := soak.Duration(t)
	interval := soak.Interval(total)
	client := startSidecar(t, productpage, 2, nil)
	// Histograms dropped so each scrape stays ~1 MB (as in
	// TestHostilePeersBoundedMemory); the counters keep every label.
	server := startSidecar(t, reviews, 2, map[string]interface{}{"max_series": 2000, "metrics": dropHistograms})
	honest := 0
	longHost := strings.Repeat("h", 4096)
	start, next := time.Now(), time.Now()
	var firstHeap, maxHeap, maxScrape float64
	for i := 0; time.Since(start) < total; i++ {
		relay(t, client, server, reviewsExchange("/reviews/0"))
		honest++
		id, v := mxPeer(t, fmt.Sprintf("attacker-%d", i))
		server.inboundFrom(t, id, v, time.Millisecond)
		server.inboundFrom(t, id, v, time.Millisecond, "x-attack", "\xff\xfe")
		server.inboundWithHost(t, fmt.Sprintf("%s-%d", longHost, i))
		server.inboundFrom(t, "sidecar~10.9.9.9~x.y~y.svc.cluster.local", "", time.Millisecond) // id without value
		if time.Since(next) < 0 {
			continue
		}
		next = time.Now().Add(interval)
		heap := server.heapAfterGC(t)
		body, _ := server.scrapeRaw(t, "")
		fams := parseText(t, body)
		if firstHeap == 0 {
			firstHeap = heap
		}
		maxHeap, maxScrape = max(maxHeap, heap), max(maxScrape, float64(len(body)))
		var counted float64
		for _, m := range series(fams, "istio_requests_total", map[string]string{"reporter": "destination", "source_workload": "productpage-v1"}) {
			counted += m.GetCounter().GetValue()
		}
		t.Logf("%8s requests %7d (honest %6d, counted %6.0f): server live Go heap %6.1f MB, series %5.0f, overflowed %7.0f, interned peers %5.0f, scrape %8d B",
			time.Since(start).Round(time.Second), honest*5, honest, counted, heap/1e6, gaugeOf(fams, "leanmesh_series"),
			gaugeOf(fams, "leanmesh_series_overflow_records_total"), gaugeOf(fams, "leanmesh_interned_peers"), len(body))
		if counted != float64(honest) {
			t.Errorf("honest requests %d, counted %.0f: lost", honest, counted)
		}
	}
	t.Logf("soak %s: %d honest + %d hostile requests; live heap first %.1f MB, max %.1f MB; largest scrape %.0f B",
		total, honest, honest*4, firstHeap/1e6, maxHeap/1e6, maxScrape)
	if maxHeap-firstHeap > 64e6 {
		t.Errorf("live heap grew %.1f MB during the soak", (maxHeap-firstHeap)/1e6)
	}
}

// inboundWithHost sends one request without MX to s's inbound listener
// with the given :authority.
func (s *sidecar) inboundWithHost(t testing.TB, authority string) {
	t.Helper()
	_, meta := meshCluster("reviews", "bookinfo", "9080")
	res, err := s.h.Run(&envoyhost.Request{Config: s.inbound, Cluster: meta,
		Headers:         envoyhost.H(":method", "GET", ":path", "/r", ":authority", authority, ":scheme", "http"),
		Info:            envoyhost.StreamInfo{Protocol: "HTTP/1.1", UpstreamCluster: "inbound|9080||", RequestDuration: time.Millisecond},
		ResponseHeaders: envoyhost.H(":status", "200")})
	if err != nil || res.Error != "" {
		t.Fatalf("request: %v %s", err, res.Error)
	}
}

// TestMXEchoOnlyWhatWasSent: through the real library, the server echoes
// each MX header only when the request carried it (Istio's
// MXPropagationMethod::inject). Issue #18: a request with only
// x-envoy-peer-metadata-id made it echo its full metadata.
func TestMXEchoOnlyWhatWasSent(t *testing.T) {
	server := startSidecar(t, reviews, 1, nil)
	_, meta := meshCluster("reviews", "bookinfo", "9080")
	id, value := mxPeer(t, "caller")
	for _, tc := range []struct {
		name           string
		hdr            []string
		wantID, wantMX bool
	}{
		{"no MX", nil, false, false},
		{"id only", []string{mxIDHeader, id}, true, false},
		{"id and value", []string{mxIDHeader, id, mxHeader, value}, true, true},
	} {
		res, err := server.h.Run(&envoyhost.Request{Config: server.inbound, Cluster: meta,
			Headers:         envoyhost.H(append([]string{":method", "GET", ":path", "/r", ":authority", "reviews:9080", ":scheme", "http"}, tc.hdr...)...),
			Info:            envoyhost.StreamInfo{Protocol: "HTTP/1.1", UpstreamCluster: "inbound|9080||", RequestDuration: time.Millisecond},
			ResponseHeaders: envoyhost.H(":status", "200")})
		if err != nil || res.Error != "" {
			t.Fatalf("%s: %v %s", tc.name, err, res.Error)
		}
		gotID, gotMX := has(res.Downstream.Headers, mxIDHeader), has(res.Downstream.Headers, mxHeader)
		t.Logf("%-13s → response carries id %v, metadata %v", tc.name, gotID, gotMX)
		if gotID != tc.wantID || gotMX != tc.wantMX {
			t.Errorf("%s: echoed id %v metadata %v, want %v %v", tc.name, gotID, gotMX, tc.wantID, tc.wantMX)
		}
	}
}
