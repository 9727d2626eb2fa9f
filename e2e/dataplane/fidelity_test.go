package dataplane

import (
	"os"
	"strings"
	"testing"

	"github.com/leanmesh/leanmesh/e2e/envoyhost"
	"github.com/leanmesh/leanmesh/filters/pluginconfig"
)

// TestServiceNamespaceWithoutPeer: a client calling a mesh service that
// answers 503 with no exchange (UF,URX: no server was reached) takes
// destination_service_namespace from the cluster's istio metadata, as
// istio_stats.cc does (service_namespace before the peer's, lines 1241-1244),
// not "unknown".
func TestServiceNamespaceWithoutPeer(t *testing.T) {
	client := startSidecar(t, productpage, 1, nil)
	cluster, meta := meshCluster("ratings", "bookinfo", "9080")
	res, err := client.h.Run(&envoyhost.Request{Config: client.outbound,
		Headers: envoyhost.H(":method", "GET", ":path", "/ratings/0", ":authority", "ratings:9080", ":scheme", "http"),
		Info:    envoyhost.StreamInfo{UpstreamCluster: cluster, ResponseFlags: 1<<5 | 1<<15, ResponseCode: 503},
		Cluster: meta, ResponseHeaders: envoyhost.H(":status", "503")})
	if err != nil || res.Error != "" {
		t.Fatal(err, res.Error)
	}
	got := series(client.scrape(t), "istio_requests_total", map[string]string{"response_code": "503", "response_flags": "UF,URX",
		"destination_service": "ratings.bookinfo.svc.cluster.local", "destination_service_name": "ratings",
		"destination_service_namespace": "bookinfo", "destination_workload": "unknown", "destination_workload_namespace": "unknown"})
	if len(got) != 1 {
		t.Fatalf("503 series with the service namespace from cluster metadata missing: %v", client.scrape(t)["istio_requests_total"])
	}
}

// TestPlaintextPrincipalFromIdentity: without TLS the client side's
// destination_principal is the IDENTITY the server sent in its exchange
// (Istio 1.29+ peers whose node carries one; istio_stats.cc:1080-1085), and
// its namespace wins; with certificate_principals_only it stays "unknown".
// The server side's source_principal never comes from the exchange.
func TestPlaintextPrincipalFromIdentity(t *testing.T) {
	raw, err := os.ReadFile("../../filters/peer/testdata/peers/k8s-labels-1.29.header")
	if err != nil {
		t.Fatal(err)
	}
	header := strings.TrimSpace(string(raw))
	const identity = "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings" // IDENTITY in that header
	for _, c := range []struct {
		name   string
		extra  map[string]interface{}
		client string
	}{
		{"default", nil, identity},
		{"certificate_principals_only", map[string]interface{}{"metadata_exchange": map[string]interface{}{"certificate_principals_only": true}}, "unknown"},
	} {
		t.Run(c.name, func(t *testing.T) {
			client := startSidecar(t, productpage, 1, c.extra)
			cluster, meta := meshCluster("ratings", "bookinfo", "9080")
			res, err := client.h.Run(&envoyhost.Request{Config: client.outbound,
				Headers: envoyhost.H(":method", "GET", ":path", "/ratings/1", ":authority", "ratings:9080", ":scheme", "http"),
				Info:    envoyhost.StreamInfo{UpstreamCluster: cluster}, Cluster: meta,
				ResponseHeaders: envoyhost.H(":status", "200", mxHeader, header, mxIDHeader, "sidecar~10.1.0.13~ratings-v1-7d8c9f6b5-abcde.bookinfo~bookinfo.svc.cluster.local")})
			if err != nil || res.Error != "" {
				t.Fatal(err, res.Error)
			}
			if got := series(client.scrape(t), "istio_requests_total", map[string]string{"reporter": "source", "destination_workload": "ratings-v1",
				"destination_principal": c.client, "destination_workload_namespace": "bookinfo", "connection_security_policy": "unknown"}); len(got) != 1 {
				t.Errorf("client series with destination_principal %q missing: %v", c.client, client.scrape(t)["istio_requests_total"])
			}

			// Server side: the same kind of header from a client, no TLS.
			server := startSidecar(t, reviews, 1, c.extra)
			x := reviewsExchange("/")
			sres, err := server.h.Run(&envoyhost.Request{Config: server.inbound,
				Headers: envoyhost.H(":method", "GET", ":path", "/", ":authority", "reviews:9080", mxHeader, header, mxIDHeader, "ratings-id"),
				Info:    x.serverReq.Info, Cluster: x.serverReq.Cluster, ResponseHeaders: envoyhost.H(":status", "200")})
			if err != nil || sres.Error != "" {
				t.Fatal(err, sres.Error)
			}
			if got := series(server.scrape(t), "istio_requests_total", map[string]string{"reporter": "destination", "source_workload": "ratings-v1",
				"source_principal": "unknown", "connection_security_policy": "none"}); len(got) != 1 {
				t.Errorf("server series must keep source_principal certificate-only: %v", server.scrape(t)["istio_requests_total"])
			}
		})
	}
}

// TestShadowNames: Shadow's metric_prefix renames every family leanmesh
// records, istio_build included, so Istio's queries (istio_requests_total)
// never match leanmesh's copy of the same traffic.
func TestShadowNames(t *testing.T) {
	extra := map[string]interface{}{"metric_prefix": pluginconfig.ShadowMetricPrefix}
	client := startSidecar(t, productpage, 1, extra)
	server := startSidecar(t, reviews, 1, extra)
	relay(t, client, server, reviewsExchange("/reviews/1"))
	for _, s := range []*sidecar{client, server} {
		fams := s.scrape(t)
		for name := range fams {
			if strings.HasPrefix(name, "istio_") {
				t.Errorf("unprefixed family %s in Shadow exposition", name)
			}
		}
		for _, want := range []string{"leanmesh_shadow_istio_requests_total", "leanmesh_shadow_istio_request_duration_milliseconds", "leanmesh_shadow_istio_build"} {
			if fams[want] == nil {
				t.Errorf("no %s", want)
			}
		}
		if m := series(fams, "leanmesh_shadow_istio_requests_total", map[string]string{"destination_workload": "reviews-v2", "source_workload": "productpage-v1"}); len(m) != 1 {
			t.Errorf("shadow series: %v", fams["leanmesh_shadow_istio_requests_total"])
		}
	}
}
