package httpstats

import (
	"testing"

	"github.com/leanmesh/leanmesh/filters/peer"
)

// BenchmarkFilterOutboundSteady: the filter's own Go work for one outbound
// request with a cached peer and a known series, against the fake API (no C
// calls): the part of the per-request cost leanmesh controls. The C ABI cost
// is measured in e2e/dataplane (BenchmarkDataPlane).
func BenchmarkFilterOutboundSteady(b *testing.B) {
	w := newWorld(b)
	cfg := newConfig(b, `{"direction":"outbound"}`)
	s := outboundStream(b, w, "outbound|9080||"+reviewsHost, clusterMeta(b, map[string]interface{}{
		"services": []interface{}{map[string]interface{}{"host": reviewsHost, "name": "reviews", "namespace": "default"}}}))
	req := newHeaders(":authority", "reviews:9080", ":path", "/reviews/1")
	resp := newHeaders(":status", "200")
	b.ReportAllocs()
	for b.Loop() {
		resp.M[peer.HeaderMetadata], resp.M[peer.HeaderMetadataID] = w.reviewsMX.HeaderValue, reviewsID
		run(Factory(cfg, s), req, resp, nil)
	}
}

// BenchmarkFilterInboundSteady: the same for the server side.
func BenchmarkFilterInboundSteady(b *testing.B) {
	w := newWorld(b)
	cfg := newConfig(b, `{"direction":"inbound"}`)
	s := &stream{Code: 200, HasCode: true, Cluster: "inbound|9080||", Props: map[string]string{
		"xds.node":             nodeBytes(b, reviewsID, w.reviews),
		"xds.cluster_metadata": clusterMeta(b, map[string]interface{}{"services": []interface{}{map[string]interface{}{"host": reviewsHost, "name": "reviews"}}}),
		"response.flags":       "0", "request.duration": "3ms", "request.total_size": "200", "response.total_size": "900",
		"connection.uri_san_peer_certificate":  "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
		"connection.uri_san_local_certificate": "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
	}}
	client := w.reviewsMX // any valid peer header
	req := newHeaders(":authority", "reviews:9080")
	resp := newHeaders(":status", "200")
	b.ReportAllocs()
	for b.Loop() {
		req.M[peer.HeaderMetadata], req.M[peer.HeaderMetadataID] = client.HeaderValue, client.ID
		run(Factory(cfg, s), req, resp, nil)
	}
}
