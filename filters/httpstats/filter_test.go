package httpstats

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/leanmesh/leanmesh/filters/peer"
	"github.com/leanmesh/leanmesh/filters/pluginconfig"
	"github.com/leanmesh/leanmesh/filters/telemetry"
)

func nodeMeta(t testing.TB, workload, ns, app, version string) *structpb.Struct {
	s, err := structpb.NewStruct(map[string]interface{}{
		"NAME": workload + "-abc", "NAMESPACE": ns, "WORKLOAD_NAME": workload, "CLUSTER_ID": "Kubernetes",
		"ISTIO_VERSION": "1.31.1", "MESH_ID": "cluster.local",
		"OWNER": "kubernetes://apis/apps/v1/namespaces/" + ns + "/deployments/" + workload,
		"LABELS": map[string]interface{}{"app": app, "version": version,
			"service.istio.io/canonical-name": app, "service.istio.io/canonical-revision": version},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func nodeBytes(t testing.TB, id string, meta *structpb.Struct) string {
	b, err := proto.Marshal(&corev3.Node{Id: id, Metadata: meta})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func clusterMeta(t testing.TB, fields map[string]interface{}) string {
	s, err := structpb.NewStruct(fields)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := proto.Marshal(&corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": s}})
	return string(b)
}

var registrySeq atomic.Int64

// newConfig parses a plugin config into its own registry (a unique
// max_series keeps tests from sharing the process-wide registries).
func newConfig(t testing.TB, js string) *Config {
	t.Helper()
	js = strings.TrimSuffix(strings.TrimSpace(js), "}") + fmt.Sprintf(`,"max_series":%d}`, 1000000+registrySeq.Add(1))
	c, err := pluginconfig.FromJSON([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return NewConfig(c)
}

const (
	productpageID = "sidecar~10.0.0.1~productpage-v1-abc.default~default.svc.cluster.local"
	reviewsID     = "sidecar~10.0.0.2~reviews-v2-abc.default~default.svc.cluster.local"
	reviewsHost   = "reviews.default.svc.cluster.local"
)

type world struct {
	productpage *structpb.Struct
	reviews     *structpb.Struct
	reviewsMX   *peer.Local
}

func newWorld(t testing.TB) world {
	w := world{productpage: nodeMeta(t, "productpage-v1", "default", "productpage", "v1"), reviews: nodeMeta(t, "reviews-v2", "default", "reviews", "v2")}
	var err error
	if w.reviewsMX, err = peer.NewLocal(reviewsID, w.reviews, peer.EncodeOptions{}); err != nil {
		t.Fatal(err)
	}
	return w
}

func outboundStream(t testing.TB, w world, cluster string, meta string) *stream {
	return &stream{Worker: 1, Code: 200, HasCode: true, Cluster: cluster, Props: map[string]string{
		"xds.node":                           nodeBytes(t, productpageID, w.productpage),
		"xds.cluster_metadata":               meta,
		"response.flags":                     "0",
		"request.duration":                   "12.5ms",
		"request.total_size":                 "300",
		"response.total_size":                "1200",
		"upstream.uri_san_peer_certificate":  "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
		"upstream.uri_san_local_certificate": "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
	}}
}

// run drives one request through the filter as Envoy orders the callbacks.
func run(f api.StreamFilter, req, resp, trailers *headers) {
	f.DecodeHeaders(req, true)
	f.EncodeHeaders(resp, trailers == nil)
	var tr api.ResponseTrailerMap
	if trailers != nil {
		f.EncodeTrailers(trailers)
		tr = trailers
	}
	f.OnLog(req, nil, resp, tr)
	f.OnDestroy(api.Normal)
}

func scrape(t testing.TB, reg *telemetry.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(reg.AppendText(nil)))
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

func onlySeries(t testing.TB, fams map[string]*dto.MetricFamily, name string) (map[string]string, float64) {
	t.Helper()
	f := fams[name]
	if f == nil || len(f.GetMetric()) != 1 {
		t.Fatalf("%s: want exactly one series, got %v", name, f)
	}
	m := f.GetMetric()[0]
	ls := map[string]string{}
	for _, lp := range m.GetLabel() {
		ls[lp.GetName()] = lp.GetValue()
	}
	return ls, m.GetCounter().GetValue()
}

func TestOutboundInMeshExchangesAndRecords(t *testing.T) {
	w := newWorld(t)
	cfg := newConfig(t, `{"direction":"outbound"}`)
	s := outboundStream(t, w, "outbound|9080||"+reviewsHost, clusterMeta(t, map[string]interface{}{
		"services": []interface{}{map[string]interface{}{"host": reviewsHost, "name": "reviews", "namespace": "default"}}}))
	f := Factory(cfg, s)
	req := newHeaders(":authority", "reviews:9080", ":path", "/reviews/1", peer.HeaderMetadata, "forged-by-app")
	f.DecodeHeaders(req, true)
	local := cfg.local.Load()
	if req.M[peer.HeaderMetadata] != local.mx.HeaderValue || req.M[peer.HeaderMetadataID] != productpageID {
		t.Fatalf("request MX headers = %q / %q", req.M[peer.HeaderMetadata], req.M[peer.HeaderMetadataID])
	}
	resp := newHeaders(":status", "200", peer.HeaderMetadata, w.reviewsMX.HeaderValue, peer.HeaderMetadataID, reviewsID)
	f.EncodeHeaders(resp, true)
	if _, ok := resp.M[peer.HeaderMetadata]; ok {
		t.Fatal("response MX header must be stripped before the app")
	}
	if _, ok := resp.M[peer.HeaderMetadataID]; ok {
		t.Fatal("response MX id header must be stripped before the app")
	}
	f.OnLog(req, nil, resp, nil)

	ls, v := onlySeries(t, scrape(t, cfg.Registry()), "istio_requests_total")
	want := map[string]string{
		"reporter": "source", "source_workload": "productpage-v1", "source_app": "productpage",
		"source_principal":     "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
		"destination_workload": "reviews-v2", "destination_app": "reviews", "destination_version": "v2",
		"destination_canonical_service": "reviews", "destination_canonical_revision": "v2",
		"destination_service": reviewsHost, "destination_service_name": "reviews", "destination_service_namespace": "default",
		"destination_principal": "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
		"destination_cluster":   "Kubernetes", "request_protocol": "http", "response_code": "200", "response_flags": "-",
		"connection_security_policy": "unknown", "grpc_response_status": "",
	}
	for k, wv := range want {
		if ls[k] != wv {
			t.Errorf("%s = %q, want %q", k, ls[k], wv)
		}
	}
	if v != 1 {
		t.Errorf("requests = %v", v)
	}
	fams := scrape(t, cfg.Registry())
	h := fams["istio_request_duration_milliseconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleSum() != 12 || h.GetSampleCount() != 1 {
		t.Errorf("duration sum/count = %v/%v (12.5ms truncates to 12 as Istio)", h.GetSampleSum(), h.GetSampleCount())
	}
	if got := fams["istio_response_bytes"].GetMetric()[0].GetHistogram().GetSampleSum(); got != 1200 {
		t.Errorf("response bytes = %v", got)
	}
	mustNoPanicLog(t)
}

func TestOutboundNonMeshGetsNoMX(t *testing.T) {
	w := newWorld(t)
	mesh := clusterMeta(t, map[string]interface{}{"services": []interface{}{map[string]interface{}{"host": reviewsHost, "name": "reviews"}}})
	cases := []struct {
		name, policy, cluster, meta string
		send                        bool
	}{
		{"mesh service", "in_mesh", "outbound|9080||" + reviewsHost, mesh, true},
		{"passthrough", "in_mesh", "PassthroughCluster", "", false},
		{"blackhole", "in_mesh", "BlackHoleCluster", "", false},
		{"service entry marked external", "in_mesh", "outbound|443||api.example.com", clusterMeta(t, map[string]interface{}{"external": true, "services": []interface{}{map[string]interface{}{"host": "api.example.com"}}}), false},
		{"disable_mx", "in_mesh", "outbound|9080||" + reviewsHost, clusterMeta(t, map[string]interface{}{"disable_mx": true, "services": []interface{}{map[string]interface{}{"host": reviewsHost}}}), false},
		{"cluster without istio services", "in_mesh", "outbound|80||raw", "", false},
		{"istio behaviour: external gets it", "all", "outbound|443||api.example.com", clusterMeta(t, map[string]interface{}{"external": true}), true},
		{"istio behaviour: passthrough gets it", "all", "PassthroughCluster", "", true},
		{"istio behaviour: non-mesh cluster gets it", "all", "outbound|80||raw", "", true},
		{"istio behaviour: disable_mx still wins", "all", "outbound|9080||" + reviewsHost, clusterMeta(t, map[string]interface{}{"disable_mx": true}), false},
		// Istio reads the flag with bool_value(): a string is not true.
		{"istio behaviour: disable_mx as a string is not set", "all", "outbound|9080||" + reviewsHost, clusterMeta(t, map[string]interface{}{"disable_mx": "true"}), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := newConfig(t, `{"direction":"outbound","metadata_exchange":{"send_to":"`+c.policy+`"}}`)
			s := outboundStream(t, w, c.cluster, c.meta)
			req := newHeaders(":authority", "x", peer.HeaderMetadata, "from-app", peer.HeaderMetadataID, "app-id")
			Factory(cfg, s).DecodeHeaders(req, true)
			_, sent := req.M[peer.HeaderMetadata]
			if sent != c.send {
				t.Fatalf("MX sent = %v, want %v (headers %v)", sent, c.send, req.M)
			}
			if !c.send && (req.M[peer.HeaderMetadataID] != "") {
				t.Fatalf("app's MX id must not leak: %v", req.M)
			}
		})
	}
}

func TestInboundReadsStripsAndEchoes(t *testing.T) {
	w := newWorld(t)
	cfg := newConfig(t, `{"direction":"inbound"}`)
	client, _ := peer.NewLocal(productpageID, w.productpage, peer.EncodeOptions{})
	newStream := func() *stream {
		return &stream{Worker: 0, Code: 200, HasCode: true, Cluster: "inbound|9080||", Props: map[string]string{
			"xds.node":                             nodeBytes(t, reviewsID, w.reviews),
			"xds.cluster_metadata":                 clusterMeta(t, map[string]interface{}{"services": []interface{}{map[string]interface{}{"host": reviewsHost, "name": "reviews", "namespace": "default"}}}),
			"response.flags":                       "0",
			"connection.uri_san_peer_certificate":  "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
			"connection.uri_san_local_certificate": "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
		}}
	}
	s := newStream()
	f := Factory(cfg, s)
	req := newHeaders(":authority", "reviews:9080", peer.HeaderMetadata, client.HeaderValue, peer.HeaderMetadataID, client.ID)
	f.DecodeHeaders(req, true)
	if _, ok := req.M[peer.HeaderMetadata]; ok {
		t.Fatal("the app must never see MX headers")
	}
	resp := newHeaders(":status", "200")
	f.EncodeHeaders(resp, true)
	if resp.M[peer.HeaderMetadataID] != reviewsID || resp.M[peer.HeaderMetadata] == "" {
		t.Fatalf("server must echo its MX when the request carried it: %v", resp.M)
	}
	f.OnLog(req, nil, resp, nil)
	ls, _ := onlySeries(t, scrape(t, cfg.Registry()), "istio_requests_total")
	for k, v := range map[string]string{"reporter": "destination", "source_workload": "productpage-v1", "source_app": "productpage",
		"source_principal": "spiffe://cluster.local/ns/default/sa/bookinfo-productpage", "destination_workload": "reviews-v2",
		"destination_service": reviewsHost, "destination_service_name": "reviews", "connection_security_policy": "mutual_tls"} {
		if ls[k] != v {
			t.Errorf("%s = %q, want %q", k, ls[k], v)
		}
	}
	// No MX on the request: no echo.
	s2 := newStream()
	f2 := Factory(cfg, s2)
	resp2 := newHeaders(":status", "200")
	f2.DecodeHeaders(newHeaders(":authority", "reviews:9080"), true)
	f2.EncodeHeaders(resp2, true)
	if _, ok := resp2.M[peer.HeaderMetadata]; ok {
		t.Fatal("must not echo MX to a client that sent none")
	}
	// Only the id on the request: only our id back, as Istio's
	// MXPropagationMethod::inject echoes each header only when it was received.
	s3 := newStream()
	f3 := Factory(cfg, s3)
	resp3 := newHeaders(":status", "200")
	f3.DecodeHeaders(newHeaders(":authority", "reviews:9080", peer.HeaderMetadataID, client.ID), true)
	f3.EncodeHeaders(resp3, true)
	if _, ok := resp3.M[peer.HeaderMetadata]; ok || resp3.M[peer.HeaderMetadataID] != reviewsID {
		t.Fatalf("id-only request: echoed %v, want the id alone", resp3.M)
	}
}

func TestMalformedPeerHeaderIgnoredAndCounted(t *testing.T) {
	w := newWorld(t)
	cfg := newConfig(t, `{"direction":"inbound"}`)
	before := telemetry.Self.Counter("leanmesh_errors_total", "kind", "peer_metadata_invalid").Load()
	for _, bad := range []string{"!!!not-base64!!!", "aGVsbG8=", strings.Repeat("A", 100000)} {
		s := &stream{Code: 200, HasCode: true, Props: map[string]string{"xds.node": nodeBytes(t, reviewsID, w.reviews)}}
		f := Factory(cfg, s)
		req := newHeaders(peer.HeaderMetadata, bad, peer.HeaderMetadataID, "bad-peer")
		if st := f.DecodeHeaders(req, true); st != api.Continue {
			t.Fatalf("status %v", st)
		}
		if _, ok := req.M[peer.HeaderMetadata]; ok {
			t.Fatal("malformed header must still be stripped")
		}
		f.OnLog(req, nil, newHeaders(), nil)
	}
	if got := telemetry.Self.Counter("leanmesh_errors_total", "kind", "peer_metadata_invalid").Load() - before; got != 3 {
		t.Fatalf("counted %d malformed headers, want 3", got)
	}
	ls, v := onlySeries(t, scrape(t, cfg.Registry()), "istio_requests_total")
	if ls["source_workload"] != "unknown" || v != 3 {
		t.Fatalf("malformed peers record as unknown: %v %v", ls["source_workload"], v)
	}
}

func TestPanicsAreContained(t *testing.T) {
	w := newWorld(t)
	cfg := newConfig(t, `{"direction":"outbound"}`)
	s := outboundStream(t, w, "outbound|9080||"+reviewsHost, "")
	s.PanicOn = "response.flags"
	before := telemetry.Self.Counter("leanmesh_panics_total", "callback", "OnLog").Load()
	f := Factory(cfg, s)
	f.DecodeHeaders(newHeaders(), true)
	f.OnLog(newHeaders(), nil, newHeaders(), nil) // must not panic
	if telemetry.Self.Counter("leanmesh_panics_total", "callback", "OnLog").Load() != before+1 {
		t.Fatal("panic not counted")
	}
	s.PanicOn = "xds.node"
	cfg2 := newConfig(t, `{"direction":"outbound"}`)
	if st := Factory(cfg2, s).DecodeHeaders(newHeaders(), true); st != api.Continue {
		t.Fatalf("a panic must let the request continue, got %v", st)
	}
}

func TestGRPCMessagesAndStatus(t *testing.T) {
	w := newWorld(t)
	cfg := newConfig(t, `{"direction":"outbound"}`)
	s := outboundStream(t, w, "outbound|9080||"+reviewsHost, "")
	f := Factory(cfg, s)
	req := newHeaders(":path", "/reviews.Reviews/Get", "content-type", "application/grpc+proto", ":authority", "reviews:9080")
	f.DecodeHeaders(req, false)
	// Two messages in one chunk, a third split across chunks.
	f.DecodeData(buf(frame(3), frame(0), frame(10)[:7]), false)
	f.DecodeData(buf(frame(10)[7:]), true)
	resp := newHeaders(":status", "200", "content-type", "application/grpc")
	f.EncodeHeaders(resp, false)
	f.EncodeData(buf(frame(2)), false)
	tr := trailers{Headers: newHeaders("grpc-status", "7")}
	f.EncodeTrailers(tr)
	f.OnLog(req, nil, resp, tr)
	fams := scrape(t, cfg.Registry())
	ls, _ := onlySeries(t, fams, "istio_requests_total")
	if ls["request_protocol"] != "grpc" || ls["grpc_response_status"] != "7" {
		t.Errorf("protocol %q status %q", ls["request_protocol"], ls["grpc_response_status"])
	}
	if _, v := onlySeries(t, fams, "istio_request_messages_total"); v != 3 {
		t.Errorf("request messages = %v, want 3", v)
	}
	if _, v := onlySeries(t, fams, "istio_response_messages_total"); v != 1 {
		t.Errorf("response messages = %v, want 1", v)
	}
}

func frame(n int) []byte {
	b := []byte{0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	return append(b, make([]byte, n)...)
}

type bufferInstance struct {
	api.BufferInstance
	b []byte
}

func (b *bufferInstance) Bytes() []byte { return b.b }
func (b *bufferInstance) Len() int      { return len(b.b) }

func buf(parts ...[]byte) api.BufferInstance {
	return &bufferInstance{b: bytes.Join(parts, nil)}
}

func TestResponseFlagsAndEndpointFallback(t *testing.T) {
	w := newWorld(t)
	cfg := newConfig(t, `{"direction":"outbound"}`)
	s := outboundStream(t, w, "outbound|9080||"+reviewsHost, "")
	s.Code = 503
	s.Props["response.flags"] = fmt.Sprint(1<<5 | 1<<15) // UF, URX
	hm, _ := structpb.NewStruct(map[string]interface{}{"workload": "ratings-v1;prod;ratings;v1;Kubernetes"})
	b, _ := proto.Marshal(&corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": hm}})
	s.Props["xds.upstream_host_metadata"] = string(b)
	run(Factory(cfg, s), newHeaders(":authority", "reviews:9080"), newHeaders(":status", "503"), nil)
	ls, _ := onlySeries(t, scrape(t, cfg.Registry()), "istio_requests_total")
	for k, v := range map[string]string{"response_flags": "UF,URX", "response_code": "503", "destination_workload": "ratings-v1",
		"destination_workload_namespace": "default", // the SPIFFE SAN's namespace wins over the endpoint's "prod"
		"destination_canonical_service":  "ratings", "destination_app": "unknown",
		"destination_service": "reviews:9080"} { // no cluster metadata: Host header fallback
		if ls[k] != v {
			t.Errorf("%s = %q, want %q", k, ls[k], v)
		}
	}
}

func TestScrapeEndpoint(t *testing.T) {
	w := newWorld(t)
	stats := newConfig(t, `{"direction":"outbound"}`)
	run(Factory(stats, outboundStream(t, w, "outbound|9080||"+reviewsHost, "")), newHeaders(":authority", "reviews:9080"), newHeaders(), nil)
	scr := newConfig(t, `{"exposition":{"enabled":true}}`)
	s := &stream{}
	if st := Factory(scr, s).DecodeHeaders(newHeaders(":path", "/stats/prometheus?x=1"), true); st != api.LocalReply {
		t.Fatalf("status %v", st)
	}
	if s.LocalReply == nil || s.LocalReply.Code != 200 || s.LocalReply.Headers["content-type"][0] != telemetry.ContentType {
		t.Fatalf("reply %+v", s.LocalReply)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(s.LocalReply.Body))
	if err != nil {
		t.Fatal(err)
	}
	if fams["istio_requests_total"] == nil || fams["leanmesh_series"] == nil {
		t.Fatalf("families: %v", fams)
	}
	if fams["istio_build"] != nil {
		t.Errorf("istio_build is reported by Istio's own stats filter (TCP chains, every mode); leanmesh served a second copy")
	}
	s2 := &stream{}
	Factory(scr, s2).DecodeHeaders(newHeaders(":path", "/other"), true)
	if s2.LocalReply == nil || s2.LocalReply.Code != 404 {
		t.Fatalf("other path: %+v", s2.LocalReply)
	}
}

func TestCustomDimensions(t *testing.T) {
	w := newWorld(t)
	cfg := newConfig(t, `{"direction":"outbound","metrics":[{"name":"requests_total","dimensions":{"user":"request.headers['x-user']","port":"string(destination.port)","team":"'payments'"},"tags_to_remove":["source_principal"]}]}`)
	s := outboundStream(t, w, "outbound|9080||"+reviewsHost, "")
	s.Props["destination.port"] = "9080"
	run(Factory(cfg, s), newHeaders(":authority", "reviews:9080", "x-user", "alice"), newHeaders(), nil)
	ls, _ := onlySeries(t, scrape(t, cfg.Registry()), "istio_requests_total")
	if ls["user"] != "alice" || ls["port"] != "9080" || ls["team"] != "payments" {
		t.Errorf("dimensions %v", ls)
	}
	if _, ok := ls["source_principal"]; ok {
		t.Error("source_principal should be removed")
	}
}

func TestParserRejectsBadConfig(t *testing.T) {
	v, _ := structpb.NewStruct(map[string]interface{}{"direction": "up"})
	a, _ := anyOf(v)
	if _, err := (Parser{}).Parse(a, nil); err == nil || !strings.Contains(err.Error(), "direction") {
		t.Fatalf("err = %v", err)
	}
}

// Shadow mode: Istio's own MX filter does the exchange; leanmesh only reads.
func TestObserveModeOnlyReads(t *testing.T) {
	w := newWorld(t)
	client, _ := peer.NewLocal(productpageID, w.productpage, peer.EncodeOptions{})
	in := newConfig(t, `{"direction":"inbound","metadata_exchange":{"mode":"observe"}}`)
	s := &stream{Code: 200, HasCode: true, Props: map[string]string{"xds.node": nodeBytes(t, reviewsID, w.reviews)}}
	f := Factory(in, s)
	req := newHeaders(peer.HeaderMetadata, client.HeaderValue, peer.HeaderMetadataID, client.ID)
	f.DecodeHeaders(req, true)
	resp := newHeaders()
	f.EncodeHeaders(resp, true)
	if req.M[peer.HeaderMetadata] == "" || resp.M[peer.HeaderMetadata] != "" {
		t.Fatalf("observe must neither strip nor echo: req %v resp %v", req.M, resp.M)
	}
	f.OnLog(req, nil, resp, nil)
	if ls, _ := onlySeries(t, scrape(t, in.Registry()), "istio_requests_total"); ls["source_workload"] != "productpage-v1" {
		t.Fatalf("observed peer not used: %v", ls)
	}

	out := newConfig(t, `{"direction":"outbound","metadata_exchange":{"mode":"observe"}}`)
	so := outboundStream(t, w, "outbound|9080||"+reviewsHost, clusterMeta(t, map[string]interface{}{"services": []interface{}{map[string]interface{}{"host": reviewsHost}}}))
	fo := Factory(out, so)
	oreq := newHeaders()
	fo.DecodeHeaders(oreq, true)
	if len(oreq.M) != 0 {
		t.Fatalf("observe must not add headers: %v", oreq.M)
	}
	oresp := newHeaders(peer.HeaderMetadata, w.reviewsMX.HeaderValue, peer.HeaderMetadataID, reviewsID)
	fo.EncodeHeaders(oresp, true)
	if oresp.M[peer.HeaderMetadata] == "" {
		t.Fatal("observe must not strip")
	}
	fo.OnLog(oreq, nil, oresp, nil)
	if ls, _ := onlySeries(t, scrape(t, out.Registry()), "istio_requests_total"); ls["destination_workload"] != "reviews-v2" {
		t.Fatalf("observed peer not used: %v", ls)
	}
}

func TestOffModeTouchesNothing(t *testing.T) {
	w := newWorld(t)
	cfg := newConfig(t, `{"direction":"inbound","metadata_exchange":{"mode":"off"}}`)
	client, _ := peer.NewLocal(productpageID, w.productpage, peer.EncodeOptions{})
	s := &stream{Code: 200, HasCode: true, Props: map[string]string{"xds.node": nodeBytes(t, reviewsID, w.reviews)}}
	req := newHeaders(peer.HeaderMetadata, client.HeaderValue, peer.HeaderMetadataID, client.ID)
	run(Factory(cfg, s), req, newHeaders(), nil)
	if req.M[peer.HeaderMetadata] == "" {
		t.Fatal("off must not strip")
	}
	if ls, _ := onlySeries(t, scrape(t, cfg.Registry()), "istio_requests_total"); ls["source_workload"] != "unknown" {
		t.Fatalf("off must not read MX: %v", ls)
	}
}

// Envoy v1.39 does not expose xds.node to Go filters: the identity comes from
// the sidecar's environment and labels file, as pilot-agent builds the node.
func TestLocalIdentityFromEnvironment(t *testing.T) {
	dir := t.TempDir()
	labels := dir + "/labels"
	if err := os.WriteFile(labels, []byte("app=\"productpage\"\nversion=\"v1\"\nservice.istio.io/canonical-name=\"productpage\"\nservice.istio.io/canonical-revision=\"v1\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"POD_NAME": "productpage-v1-abc", "POD_NAMESPACE": "default", "INSTANCE_IP": "10.0.0.1",
		"ISTIO_META_WORKLOAD_NAME": "productpage-v1", "ISTIO_META_CLUSTER_ID": "Kubernetes", "ISTIO_META_ISTIO_VERSION": "1.31.1"} {
		t.Setenv(k, v)
	}
	cfg := newConfig(t, `{"direction":"outbound","local_identity":{"pod_labels_path":"`+labels+`"}}`)
	w := newWorld(t)
	s := outboundStream(t, w, "outbound|9080||"+reviewsHost, clusterMeta(t, map[string]interface{}{"services": []interface{}{map[string]interface{}{"host": reviewsHost}}}))
	delete(s.Props, "xds.node") // as real Envoy v1.39 answers: not found
	req := newHeaders(":authority", "reviews:9080")
	run(Factory(cfg, s), req, newHeaders(), nil)
	if req.M[peer.HeaderMetadataID] != productpageID {
		t.Errorf("node id from env = %q, want %q", req.M[peer.HeaderMetadataID], productpageID)
	}
	fams := scrape(t, cfg.Registry())
	ls, _ := onlySeries(t, fams, "istio_requests_total")
	if ls["source_workload"] != "productpage-v1" || ls["source_app"] != "productpage" || ls["source_cluster"] != "Kubernetes" {
		t.Errorf("local labels from env: %v", ls)
	}
	if fams["istio_build"] != nil {
		t.Errorf("LeanMesh config served istio_build (Istio's own): %v", fams["istio_build"])
	}
	// Shadow's prefixed copy carries the proxy's own version, from the env.
	shadow := newConfig(t, `{"direction":"outbound","metric_prefix":"leanmesh_shadow_","local_identity":{"pod_labels_path":"`+labels+`"}}`)
	s = outboundStream(t, w, "outbound|9080||"+reviewsHost, "")
	delete(s.Props, "xds.node")
	run(Factory(shadow, s), newHeaders(":authority", "reviews:9080"), newHeaders(), nil)
	fams = scrape(t, shadow.Registry())
	if b := fams["leanmesh_shadow_istio_build"]; b == nil || labelsOf(b.GetMetric()[0])["tag"] != "1.31.1" {
		t.Errorf("leanmesh_shadow_istio_build tag %v", b)
	}
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

func TestWorkerStatePadding(t *testing.T) {
	if s := unsafe.Sizeof(workerState{}); s%workerStride != 0 {
		t.Errorf("workerState is %d bytes, not a multiple of %d", s, workerStride)
	}
	if s := unsafe.Sizeof(workerFields{}); s > 64 {
		t.Errorf("workerState's fields take %d bytes: more than one cache line, so two workers' fields may share a line", s)
	}
}

// Custom dimensions on xds.node paths are evaluated against the node the
// local identity came from, as Istio evaluates them against the proxy's
// node: real Envoy v1.39 answers "not found" for xds.node from Go. istio/proxy's
// TestStatsGrpcStream uses configurable_metric_a: xds.node.metadata.LABELS.version.
func TestNodeDimensionsFromLocalNode(t *testing.T) {
	dir := t.TempDir()
	labels := dir + "/labels"
	if err := os.WriteFile(labels, []byte("app=\"productpage\"\nversion=\"v1\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"POD_NAME": "productpage-v1-abc", "POD_NAMESPACE": "default", "INSTANCE_IP": "10.0.0.1",
		"ISTIO_META_WORKLOAD_NAME": "productpage-v1", "ISTIO_META_CLUSTER_ID": "Kubernetes"} {
		t.Setenv(k, v)
	}
	cfg := newConfig(t, `{"direction":"outbound","local_identity":{"pod_labels_path":"`+labels+`"},"metrics":[{"dimensions":{`+
		`"node_version":"xds.node.metadata.LABELS.version","node_cluster":"string(xds.node.metadata.CLUSTER_ID)",`+
		`"node_id":"xds.node.id","node_missing":"xds.node.metadata.LABELS.nope"}}]}`)
	w := newWorld(t)
	s := outboundStream(t, w, "outbound|9080||"+reviewsHost, "")
	delete(s.Props, "xds.node") // as real Envoy v1.39 answers: not found
	run(Factory(cfg, s), newHeaders(":authority", "reviews:9080"), newHeaders(), nil)
	ls, _ := onlySeries(t, scrape(t, cfg.Registry()), "istio_requests_total")
	want := map[string]string{"node_version": "v1", "node_cluster": "Kubernetes", "node_id": productpageID,
		"node_missing": ""}
	for k, v := range want {
		if ls[k] != v {
			t.Errorf("%s = %q, want %q (labels %v)", k, ls[k], v, ls)
		}
	}
}
