package dataplane

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/leanmesh/leanmesh/e2e/envoyhost"
)

const (
	mxHeader   = "x-envoy-peer-metadata"
	mxIDHeader = "x-envoy-peer-metadata-id"
)

type exchange struct {
	clientReq   envoyhost.Request // the client sidecar's outbound request
	serverReq   envoyhost.Request // the server sidecar's inbound request (headers are relayed)
	respHeaders envoyhost.Headers
	respBody    [][]byte // the server app's response data frames
	respTrail   envoyhost.Headers
	mtls        bool
}

type outcome struct {
	appRequest  envoyhost.Headers // what the server app received
	appResponse envoyhost.Headers // what the client app received
	upstream    envoyhost.Headers // what left the client sidecar
	serverResp  envoyhost.Headers // what left the server sidecar
}

// relay runs one request through the client sidecar, the server sidecar and
// back, as two Envoys would.
func relay(t *testing.T, client, server *sidecar, x exchange) outcome {
	t.Helper()
	cr := x.clientReq
	cr.Config = client.outbound
	if client.istioMX != nil {
		// Istio's exchange is the first outbound HTTP filter: leanmesh sees
		// the request after it added its headers.
		cr.Headers = client.istioMX.injectUpstream(cr.Headers, cr.Cluster)
	}
	if x.mtls {
		cr.Props = append(cr.Props,
			envoyhost.Prop{Path: "upstream.uri_san_peer_certificate", Value: []byte(reviews.spiffe())},
			envoyhost.Prop{Path: "upstream.uri_san_local_certificate", Value: []byte(productpage.spiffe())})
	}
	part, held, err := client.h.RunRequest(&cr)
	if err != nil {
		t.Fatal(err)
	}
	sr := x.serverReq
	sr.Config = server.inbound
	sr.Headers = part.Upstream.Headers
	sr.ResponseHeaders, sr.ResponseBody, sr.ResponseTrailers = x.respHeaders, x.respBody, x.respTrail
	if server.istioMX != nil {
		// Inbound, leanmesh is first and Istio's exchange after it, so on the
		// encode path Istio's adds its response headers before leanmesh runs.
		sr.ResponseHeaders = server.istioMX.injectDownstream(sr.ResponseHeaders, sr.Headers)
	}
	if x.mtls {
		sr.Info.TLS = &envoyhost.TLS{PeerCertificatePresented: true, PeerCertificateValidated: true,
			URISANPeer: []string{productpage.spiffe()}, URISANLocal: []string{reviews.spiffe()}}
	}
	sres, err := server.h.Run(&sr)
	if err != nil || sres.Error != "" {
		t.Fatalf("server: %v %s", err, sres.Error)
	}
	cres, err := held.FinishWith(sres)
	if err != nil || cres.Error != "" {
		t.Fatalf("client finish: %v %s", err, cres.Error)
	}
	for _, r := range []*envoyhost.Result{part, sres, cres} {
		for _, e := range r.Events {
			if e.Type == "log" && strings.Contains(e.Msg, "panic") {
				t.Errorf("library logged a panic: %s", e.Msg)
			}
		}
	}
	o := outcome{appRequest: sres.Upstream.Headers, appResponse: cres.Downstream.Headers, upstream: part.Upstream.Headers, serverResp: sres.Downstream.Headers}
	// Istio's exchange reads and removes the peer's headers where leanmesh
	// (observing) leaves them: after leanmesh on the server's decode path and
	// on the client's encode path.
	if server.istioMX != nil {
		o.appRequest = removeMX(o.appRequest)
	}
	if client.istioMX != nil {
		o.appResponse = removeMX(o.appResponse)
	}
	return o
}

func has(h envoyhost.Headers, k string) bool { _, ok := h.Get(k); return ok }

func reviewsExchange(path string) exchange {
	cluster, meta := meshCluster("reviews", "bookinfo", "9080")
	_, inMeta := meshCluster("reviews", "bookinfo", "9080")
	return exchange{
		clientReq: envoyhost.Request{
			Headers: envoyhost.H(":method", "GET", ":path", path, ":authority", "reviews:9080", ":scheme", "http"),
			Info:    envoyhost.StreamInfo{Protocol: "HTTP/1.1", UpstreamCluster: cluster, RequestDuration: 7 * time.Millisecond},
			Cluster: meta,
		},
		serverReq: envoyhost.Request{
			Info:    envoyhost.StreamInfo{Protocol: "HTTP/1.1", UpstreamCluster: "inbound|9080||", RequestDuration: 4 * time.Millisecond},
			Cluster: inMeta,
		},
		respHeaders: envoyhost.H(":status", "200", "content-type", "application/json"),
		mtls:        true,
	}
}

// reviewsEdgeLabels are the 25 labels Istio's stats filter gives one
// reviewsExchange (mutual TLS, both sidecars exchanging metadata) answered
// with code, on the reporter's side (istio_stats.cc populatePeerInfo and the
// label code after it; the client reports connection_security_policy
// "unknown", as Istio's does).
func reviewsEdgeLabels(reporter, code string) map[string]string {
	security := "mutual_tls"
	if reporter == "source" {
		security = "unknown"
	}
	return map[string]string{
		"reporter": reporter, "connection_security_policy": security,
		"source_workload": "productpage-v1", "source_canonical_service": "productpage", "source_canonical_revision": "v1",
		"source_workload_namespace": "bookinfo", "source_principal": productpage.spiffe(), "source_app": "productpage",
		"source_version": "v1", "source_cluster": "Kubernetes", "destination_workload": "reviews-v2",
		"destination_workload_namespace": "bookinfo", "destination_principal": reviews.spiffe(), "destination_app": "reviews",
		"destination_version": "v2", "destination_service": "reviews.bookinfo.svc.cluster.local",
		"destination_canonical_service": "reviews", "destination_canonical_revision": "v2", "destination_service_name": "reviews",
		"destination_service_namespace": "bookinfo", "destination_cluster": "Kubernetes", "request_protocol": "http",
		"response_code": code, "grpc_response_status": "", "response_flags": "-",
	}
}

func TestHTTPMutualTLSThroughTwoLibraries(t *testing.T) {
	client := startSidecar(t, productpage, 1, nil)
	server := startSidecar(t, reviews, 1, nil)
	for i := 0; i < 3; i++ {
		o := relay(t, client, server, reviewsExchange("/reviews/0"))
		if !has(o.upstream, mxHeader) || !has(o.upstream, mxIDHeader) {
			t.Fatalf("client must send MX toward an in-mesh cluster: %v", o.upstream)
		}
		if id, _ := o.upstream.Get(mxIDHeader); id != client.id {
			t.Errorf("MX id %q, want %q", id, client.id)
		}
		if has(o.appRequest, mxHeader) || has(o.appRequest, mxIDHeader) {
			t.Fatalf("server app saw MX headers: %v", o.appRequest)
		}
		if id, _ := o.serverResp.Get(mxIDHeader); id != server.id {
			t.Fatalf("server must echo its MX: %v", o.serverResp)
		}
		if has(o.appResponse, mxHeader) || has(o.appResponse, mxIDHeader) {
			t.Fatalf("client app saw MX headers: %v", o.appResponse)
		}
	}
	for _, side := range []struct {
		s        *sidecar
		reporter string
	}{{client, "source"}, {server, "destination"}} {
		want := reviewsEdgeLabels(side.reporter, "200")
		fams := side.s.scrape(t)
		got := series(fams, "istio_requests_total", nil)
		if len(got) != 1 {
			t.Fatalf("%s: %d request series, want 1", side.reporter, len(got))
		}
		ls := labelsOf(got[0])
		if len(ls) != 25 {
			t.Errorf("%s: %d labels", side.reporter, len(ls))
		}
		for k, v := range want {
			if ls[k] != v {
				t.Errorf("%s: %s = %q, want %q", side.reporter, k, ls[k], v)
			}
		}
		if v := got[0].GetCounter().GetValue(); v != 3 {
			t.Errorf("%s: requests = %v, want 3", side.reporter, v)
		}
		d := series(fams, "istio_request_duration_milliseconds", map[string]string{"reporter": side.reporter})
		if len(d) != 1 || d[0].GetHistogram().GetSampleCount() != 3 {
			t.Fatalf("%s: duration histogram %v", side.reporter, d)
		}
		wantSum := 21.0
		if side.reporter == "destination" {
			wantSum = 12
		}
		if d[0].GetHistogram().GetSampleSum() != wantSum {
			t.Errorf("%s: duration sum %v, want %v", side.reporter, d[0].GetHistogram().GetSampleSum(), wantSum)
		}
		// The .so writes MX headers through the C API directly, never through
		// the SDK's copying Set/Del.
		if f := series(fams, "leanmesh_header_writer_fallback_total", nil); len(f) != 1 || f[0].GetCounter().GetValue() != 0 {
			t.Errorf("header writer fell back to the SDK's Set/Del: %v", f)
		}
		// istio_build is Istio's: its stats filter reports it from the TCP
		// chains in every mode (istio_stats.cc Config::Config →
		// recordVersion), so the .so serves no second copy.
		if b := series(fams, "istio_build", nil); len(b) != 0 {
			t.Errorf("LeanMesh exposition serves istio_build, doubling Istio's: %v", b)
		}
	}
}

func TestPlaintextAndFailures(t *testing.T) {
	client := startSidecar(t, productpage, 1, nil)
	server := startSidecar(t, reviews, 1, nil)
	x := reviewsExchange("/reviews/1")
	x.mtls = false
	relay(t, client, server, x)

	// An upstream connect failure after retries: 503 UF,URX, no server involved.
	cluster, meta := meshCluster("ratings", "bookinfo", "9080")
	res, err := client.h.Run(&envoyhost.Request{Config: client.outbound,
		Headers: envoyhost.H(":method", "GET", ":path", "/ratings/0", ":authority", "ratings:9080", ":scheme", "http"),
		Info:    envoyhost.StreamInfo{UpstreamCluster: cluster, ResponseFlags: 1<<5 | 1<<15, ResponseCode: 503},
		Cluster: meta, ResponseHeaders: envoyhost.H(":status", "503")})
	if err != nil || res.Error != "" {
		t.Fatal(err, res.Error)
	}
	cf := client.scrape(t)
	if got := series(cf, "istio_requests_total", map[string]string{"response_code": "503", "response_flags": "UF,URX",
		"destination_service": "ratings.bookinfo.svc.cluster.local", "destination_workload": "unknown", "destination_canonical_revision": "latest"}); len(got) != 1 {
		t.Errorf("503 UF,URX series missing: %v", cf["istio_requests_total"])
	}
	// Plaintext, and a sidecar's exchange carries no IDENTITY (its node has
	// none, as with Istio's own sidecars): unknown. TestPlaintextPrincipalFromIdentity
	// covers a peer that sends one.
	if got := series(cf, "istio_requests_total", map[string]string{"response_code": "200", "source_principal": "unknown", "destination_principal": "unknown"}); len(got) != 1 {
		t.Errorf("plaintext client series: %v", cf["istio_requests_total"])
	}
	sf := server.scrape(t)
	if got := series(sf, "istio_requests_total", map[string]string{"connection_security_policy": "none", "source_principal": "unknown", "source_workload": "productpage-v1"}); len(got) != 1 {
		t.Errorf("plaintext server series: %v", sf["istio_requests_total"])
	}
}

func TestGRPC(t *testing.T) {
	client := startSidecar(t, productpage, 1, nil)
	server := startSidecar(t, reviews, 1, nil)
	x := reviewsExchange("/reviews.Reviews/Get")
	x.clientReq.Headers = append(x.clientReq.Headers, [2]string{"content-type", "application/grpc"})
	msg := func(n int) []byte { return append([]byte{0, 0, 0, 0, byte(n)}, make([]byte, n)...) }
	x.clientReq.Body = [][]byte{append(msg(3), msg(4)...)}
	x.serverReq.Body = x.clientReq.Body
	x.respHeaders = envoyhost.H(":status", "200", "content-type", "application/grpc")
	x.respTrail = envoyhost.H("grpc-status", "5")
	relay(t, client, server, x)
	for _, s := range []*sidecar{client, server} {
		fams := s.scrape(t)
		if got := series(fams, "istio_requests_total", map[string]string{"request_protocol": "grpc", "grpc_response_status": "5", "response_code": "200"}); len(got) != 1 {
			t.Errorf("grpc series: %v", fams["istio_requests_total"])
		}
		if m := series(fams, "istio_request_messages_total", nil); len(m) != 1 || len(labelsOf(m[0])) != 20 {
			t.Errorf("request messages: %v", m)
		}
	}
	// The client counts the 2 request messages it forwarded.
	if m := series(client.scrape(t), "istio_request_messages_total", nil); len(m) == 1 && m[0].GetCounter().GetValue() != 2 {
		t.Errorf("client request messages = %v, want 2", m[0].GetCounter().GetValue())
	}
}

func TestExternalDestinationGetsNoMetadata(t *testing.T) {
	client := startSidecar(t, productpage, 1, nil)
	res, err := client.h.Run(&envoyhost.Request{Config: client.outbound,
		Headers:         envoyhost.H(":method", "GET", ":path", "/", ":authority", "api.github.com", ":scheme", "http"),
		Info:            envoyhost.StreamInfo{UpstreamCluster: "PassthroughCluster", RouteName: "allow_any"},
		ResponseHeaders: envoyhost.H(":status", "200")})
	if err != nil || res.Error != "" {
		t.Fatal(err, res.Error)
	}
	if has(res.Upstream.Headers, mxHeader) || has(res.Upstream.Headers, mxIDHeader) {
		t.Fatalf("MX leaked to an external destination: %v", res.Upstream.Headers)
	}
	got := series(client.scrape(t), "istio_requests_total", map[string]string{"destination_service_name": "PassthroughCluster",
		"destination_service": "api.github.com", "destination_workload": "unknown"})
	if len(got) != 1 {
		t.Fatal("passthrough series missing")
	}
}

// Mixed meshes: a stock Istio peer's header (Istio's own sample, produced by
// a real Istio proxy) is understood by a leanmesh server, and a leanmesh
// client reads a stock Istio server's response header.
func TestStockIstioPeers(t *testing.T) {
	raw, err := os.ReadFile("../../filters/peer/testdata/istio-1.5-sample.header")
	if err != nil {
		t.Fatal(err)
	}
	istioHeader := strings.TrimSpace(string(raw))
	istioID := "sidecar~10.52.0.34~productpage-v1-84975bc778-pxz2w.default~default.svc.cluster.local"
	server := startSidecar(t, reviews, 1, nil)
	x := reviewsExchange("/")
	res, err := server.h.Run(&envoyhost.Request{Config: server.inbound,
		Headers: envoyhost.H(":method", "GET", ":path", "/", ":authority", "reviews:9080", mxHeader, istioHeader, mxIDHeader, istioID),
		Info:    x.serverReq.Info, Cluster: x.serverReq.Cluster, ResponseHeaders: envoyhost.H(":status", "200")})
	if err != nil || res.Error != "" {
		t.Fatal(err, res.Error)
	}
	if has(res.Upstream.Headers, mxHeader) {
		t.Fatal("app saw MX")
	}
	if got := series(server.scrape(t), "istio_requests_total", map[string]string{"source_workload": "productpage-v1",
		"source_workload_namespace": "default", "source_app": "productpage", "source_canonical_revision": "version-1",
		"source_cluster": "client-cluster"}); len(got) != 1 {
		t.Errorf("server did not read the stock Istio client: %v", server.scrape(t)["istio_requests_total"])
	}

	client := startSidecar(t, reviews, 1, nil)
	cluster, meta := meshCluster("productpage", "default", "9080")
	cres, err := client.h.Run(&envoyhost.Request{Config: client.outbound,
		Headers: envoyhost.H(":method", "GET", ":path", "/", ":authority", "productpage:9080"),
		Info:    envoyhost.StreamInfo{UpstreamCluster: cluster}, Cluster: meta,
		ResponseHeaders: envoyhost.H(":status", "200", mxHeader, istioHeader, mxIDHeader, istioID)})
	if err != nil || cres.Error != "" {
		t.Fatal(err, cres.Error)
	}
	if has(cres.Downstream.Headers, mxHeader) {
		t.Fatal("client app saw MX")
	}
	if got := series(client.scrape(t), "istio_requests_total", map[string]string{"destination_workload": "productpage-v1",
		"destination_service": "productpage.default.svc.cluster.local", "destination_canonical_revision": "version-1"}); len(got) != 1 {
		t.Errorf("client did not read the stock Istio server: %v", client.scrape(t)["istio_requests_total"])
	}
}

// Malformed peer headers are ignored, stripped and counted; nothing breaks.
func TestMalformedPeerHeader(t *testing.T) {
	server := startSidecar(t, reviews, 1, nil)
	x := reviewsExchange("/")
	for _, bad := range []string{"%%%", strings.Repeat("QUJD", 5000), "aGVsbG8gd29ybGQ="} {
		res, err := server.h.Run(&envoyhost.Request{Config: server.inbound,
			Headers: envoyhost.H(":method", "GET", ":path", "/", mxHeader, bad, mxIDHeader, "x"),
			Info:    x.serverReq.Info, Cluster: x.serverReq.Cluster, ResponseHeaders: envoyhost.H(":status", "200")})
		if err != nil || res.Error != "" || res.LocalReply != nil {
			t.Fatalf("bad header broke the request: %v %s %+v", err, res.Error, res.LocalReply)
		}
		if has(res.Upstream.Headers, mxHeader) {
			t.Fatal("malformed MX must still be stripped")
		}
	}
	fams := server.scrape(t)
	if got := series(fams, "leanmesh_errors_total", map[string]string{"kind": "peer_metadata_invalid"}); len(got) != 1 || got[0].GetCounter().GetValue() != 3 {
		t.Errorf("malformed headers counted: %v", got)
	}
	if got := series(fams, "istio_requests_total", map[string]string{"source_workload": "unknown"}); len(got) != 1 || got[0].GetCounter().GetValue() != 3 {
		t.Errorf("requests with malformed peers: %v", got)
	}
}
