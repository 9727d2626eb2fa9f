package envoyhost

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// artifacts are built fresh once per test binary run.
var (
	artDir      string
	hostBin     string
	noopSO      string
	sdkstatsSO  string
	buildErr    error
	buildOnce   sync.Once
	sharedHosts = map[string]*Host{}
	sharedMu    sync.Mutex
)

func TestMain(m *testing.M) {
	code := m.Run()
	sharedMu.Lock()
	for _, h := range sharedHosts {
		h.Close()
	}
	sharedMu.Unlock()
	if artDir != "" {
		os.RemoveAll(artDir)
	}
	os.Exit(code)
}

func artifacts(tb testing.TB) {
	tb.Helper()
	buildOnce.Do(func() {
		artDir, buildErr = os.MkdirTemp("", "envoyhost-test-")
		if buildErr != nil {
			return
		}
		hostBin = filepath.Join(artDir, "envoyhost")
		noopSO = filepath.Join(artDir, "noop.so")
		sdkstatsSO = filepath.Join(artDir, "sdkstats.so")
		var wg sync.WaitGroup
		errs := make([]error, 3)
		wg.Add(3)
		go func() { defer wg.Done(); errs[0] = BuildHost(hostBin) }()
		go func() { defer wg.Done(); errs[1] = BuildPlugin("./e2e/envoyhost/plugins/noop", noopSO) }()
		go func() { defer wg.Done(); errs[2] = BuildPlugin("./e2e/envoyhost/plugins/sdkstats", sdkstatsSO) }()
		wg.Wait()
		for _, e := range errs {
			if e != nil {
				buildErr = e
			}
		}
	})
	if buildErr != nil {
		tb.Fatalf("build: %v", buildErr)
	}
}

// shared returns a long-lived host keyed by name (one Go runtime per
// process: tests share hosts instead of starting one each).
func shared(tb testing.TB, name string, opts Options) *Host {
	tb.Helper()
	artifacts(tb)
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if h, ok := sharedHosts[name]; ok {
		return h
	}
	opts.HostBin = hostBin
	h, err := Start(opts)
	if err != nil {
		tb.Fatalf("start host %s: %v", name, err)
	}
	sharedHosts[name] = h
	return h
}

func noopHost(tb testing.TB) *Host {
	artifacts(tb)
	return shared(tb, "noop", Options{SO: noopSO, Workers: 2})
}

func configID(t testing.TB, h *Host, plugin string, a *anypb.Any) uint64 {
	t.Helper()
	id, err := h.Config(plugin, a)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func mustRun(t *testing.T, h *Host, r *Request) *Result {
	t.Helper()
	res, err := h.Run(r)
	if err != nil {
		t.Fatal(err)
	}
	if res.Error != "" {
		t.Fatalf("stream error: %s", res.Error)
	}
	return res
}

func noCAPIErrors(t *testing.T, res *Result) {
	t.Helper()
	for _, e := range res.CAPIErrors() {
		t.Errorf("unexpected C API answer: %s %s in %s", e.API, e.Name, e.State)
	}
}

func statuses(res *Result) string {
	var s []string
	for _, c := range res.Calls {
		s = append(s, fmt.Sprintf("%s/%s=%s", c.Call, c.Dir, c.StatusName))
	}
	return strings.Join(s, " ")
}

func baseReq(cfg uint64, probe string) *Request {
	return &Request{
		Config:  cfg,
		Headers: H(":method", "POST", ":path", "/p?q=1", ":authority", "svc", ":scheme", "http", "x-probe", probe, "x-in", "in", "x-remove-me", "x"),
	}
}

func TestNoopAllPhases(t *testing.T) {
	h := noopHost(t)
	cfg := configID(t, h, "noop", nil)
	r := &Request{
		Config:           cfg,
		Headers:          H(":method", "POST", ":path", "/a", ":authority", "svc", "content-type", "text/plain"),
		Body:             [][]byte{[]byte("he"), []byte("ll"), []byte("o")},
		Trailers:         H("x-req-trailer", "t"),
		ResponseHeaders:  H(":status", "200", "x-up", "1"),
		ResponseBody:     [][]byte{[]byte("wor"), []byte("ld")},
		ResponseTrailers: H("grpc-status", "0"),
	}
	res := mustRun(t, h, r)
	noCAPIErrors(t, res)
	if got := string(res.Upstream.Body); got != "hello" {
		t.Errorf("upstream body %q", got)
	}
	if v, _ := res.Upstream.Trailers.Get("x-req-trailer"); v != "t" || !res.Upstream.EndStream {
		t.Errorf("upstream trailers %v end %v", res.Upstream.Trailers, res.Upstream.EndStream)
	}
	if got := string(res.Downstream.Body); got != "world" || !res.Downstream.EndStream {
		t.Errorf("downstream body %q end %v", got, res.Downstream.EndStream)
	}
	want := "OnHttpHeader/decode=Continue OnHttpData/decode=Continue OnHttpData/decode=Continue OnHttpData/decode=Continue " +
		"OnHttpHeader/decode=Continue OnHttpHeader/encode=Continue OnHttpData/encode=Continue OnHttpData/encode=Continue " +
		"OnHttpHeader/encode=Continue OnHttpStreamComplete/stream= OnHttpLog/stream= OnHttpDestroy/stream="
	if got := statuses(res); got != want {
		t.Errorf("calls\n got %s\nwant %s", got, want)
	}
	if res.ResponseCode != 200 || res.DestroyReason != 0 {
		t.Errorf("code %d destroy reason %d", res.ResponseCode, res.DestroyReason)
	}
}

func TestProbeMutateAndTrailers(t *testing.T) {
	h := noopHost(t)
	cfg := configID(t, h, "probe", nil)
	r := baseReq(cfg, "mutate,trailers")
	r.Body = [][]byte{[]byte("x")}
	r.Trailers = H("x-t", "1")
	r.ResponseHeaders = H(":status", "201", "x-resp-remove-me", "1")
	r.ResponseBody = [][]byte{[]byte("y")}
	r.ResponseTrailers = H("x-rt", "1")
	res := mustRun(t, h, r)
	noCAPIErrors(t, res)
	up := res.Upstream.Headers
	if v, _ := up.Get("x-probe-req"); v != "1" {
		t.Errorf("x-probe-req missing: %v", up)
	}
	if v := up.Values("x-probe-multi"); len(v) != 2 || v[0] != "a" || v[1] != "b" {
		t.Errorf("x-probe-multi %v", v)
	}
	if _, ok := up.Get("x-remove-me"); ok {
		t.Errorf("x-remove-me not removed")
	}
	if v, _ := up.Get("x-probe-raw"); v != "in|0" {
		t.Errorf("GetRaw/worker: %q", v)
	}
	if v, _ := res.Upstream.Trailers.Get("x-probe-req-trailer"); v != "1" {
		t.Errorf("request trailer not set: %v", res.Upstream.Trailers)
	}
	down := res.Downstream.Headers
	if v, _ := down.Get("x-probe-resp"); v != "1" {
		t.Errorf("x-probe-resp missing: %v", down)
	}
	if _, ok := down.Get("x-resp-remove-me"); ok {
		t.Errorf("x-resp-remove-me not removed")
	}
	if v, _ := res.Downstream.Trailers.Get("x-probe-resp-trailer"); v != "1" {
		t.Errorf("response trailer not set: %v", res.Downstream.Trailers)
	}
	if res.ResponseCode != 201 {
		t.Errorf("response code %d", res.ResponseCode)
	}
}

func TestProbeAsyncContinue(t *testing.T) {
	h := noopHost(t)
	cfg := configID(t, h, "probe", nil)
	r := baseReq(cfg, "async,asyncdata")
	r.Body = [][]byte{[]byte("a"), []byte("b"), []byte("c")}
	res := mustRun(t, h, r)
	noCAPIErrors(t, res)
	if v, _ := res.Upstream.Headers.Get("x-probe-async"); v != "done" {
		t.Errorf("header set from a goroutine was not applied: %v", res.Upstream.Headers)
	}
	if string(res.Upstream.Body) != "abc" || !res.Upstream.EndStream {
		t.Errorf("upstream body %q end %v", res.Upstream.Body, res.Upstream.EndStream)
	}
	s := statuses(res)
	if !strings.Contains(s, "OnHttpHeader/decode=Running") || strings.Count(s, "Continue/decode=Continue") != 2 {
		t.Errorf("expected Running then Continue twice, got %s", s)
	}
}

func TestProbeStopAndBuffer(t *testing.T) {
	h := noopHost(t)
	cfg := configID(t, h, "probe", nil)
	r := baseReq(cfg, "buffer")
	r.Body = [][]byte{[]byte("one-"), []byte("two-"), []byte("three")}
	r.ResponseBody = [][]byte{[]byte("r1"), []byte("r2")}
	res := mustRun(t, h, r)
	noCAPIErrors(t, res)
	if got := string(res.Upstream.Body); got != "one-two-three+probe" {
		t.Errorf("buffered body %q (calls %s)", got, statuses(res))
	}
	if got := string(res.Downstream.Body); got != "r1r2+resp" {
		t.Errorf("response body %q", got)
	}
}

func TestProbeBufferLimit413(t *testing.T) {
	h := noopHost(t)
	cfg := configID(t, h, "probe", nil)
	r := baseReq(cfg, "buffer")
	r.BufferLimit = 8
	r.Body = [][]byte{[]byte("0123456"), []byte("789abc"), []byte("end")}
	res := mustRun(t, h, r)
	if res.LocalReply == nil || res.LocalReply.Code != 413 {
		t.Fatalf("want 413 local reply, got %+v", res.LocalReply)
	}
}

func TestLocalReply(t *testing.T) {
	h := noopHost(t)
	cfg := configID(t, h, "probe", nil)
	r := baseReq(cfg, "localreply")
	r.Body = [][]byte{[]byte("ignored")}
	res := mustRun(t, h, r)
	lr := res.LocalReply
	if lr == nil {
		t.Fatalf("no local reply; calls %s", statuses(res))
	}
	if lr.Code != 403 || string(lr.Body) != "denied by probe" || lr.Details != "probe_denied" || lr.Phase != "decode" {
		t.Errorf("local reply %+v", lr)
	}
	if v, _ := lr.Headers.Get("x-lr"); v != "1" {
		t.Errorf("local reply headers %v", lr.Headers)
	}
	if v, _ := res.Downstream.Headers.Get(":status"); v != "403" {
		t.Errorf("downstream %v", res.Downstream.Headers)
	}
	if v, _ := res.Downstream.Headers.Get("content-type"); v != "text/plain" {
		t.Errorf("content-type %q", v)
	}
	if res.Upstream.Headers != nil {
		t.Errorf("request reached the upstream: %v", res.Upstream.Headers)
	}
	if res.ResponseCode != 403 {
		t.Errorf("stream info response code %d", res.ResponseCode)
	}
	// the local reply runs through this filter's encodeHeaders/encodeData
	if s := statuses(res); !strings.Contains(s, "OnHttpHeader/decode=LocalReply OnHttpHeader/encode=Continue OnHttpData/encode=Continue") {
		t.Errorf("calls %s", s)
	}
}

func TestOutOfPhaseCall(t *testing.T) {
	h := noopHost(t)
	cfg := configID(t, h, "probe", nil)
	r := baseReq(cfg, "outofphase")
	r.Body = [][]byte{[]byte("x")}
	res := mustRun(t, h, r)
	var found bool
	for _, e := range res.CAPIErrors() {
		if e.API == "HttpCopyHeaders" || e.API == "HttpSetHeader" {
			if e.Status == CAPIInvalidPhase && e.State == "decoder:ProcessingData" {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("want CAPIInvalidPhase for a header call in DecodeData, events %+v", res.Events)
	}
	// the SDK recovers the panic and answers with a 500 panic reply
	if res.LocalReply == nil || res.LocalReply.Code != 500 {
		t.Errorf("want panic reply 500, got %+v", res.LocalReply)
	}
}

func TestStalledFilterTimesOut(t *testing.T) {
	h := noopHost(t)
	cfg := configID(t, h, "probe", nil)
	r := baseReq(cfg, "stall")
	r.Timeout = 200 * time.Millisecond
	res, err := h.Run(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Error, "timeout") || !strings.Contains(res.Error, "OnHttpHeader returned Running") ||
		!strings.Contains(res.Error, "decoder:ProcessingHeader") {
		t.Errorf("error %q", res.Error)
	}
	if res.DestroyReason != 1 {
		t.Errorf("destroy reason %d, want Terminate", res.DestroyReason)
	}
}

func TestAfterDestroyCall(t *testing.T) {
	h := noopHost(t)
	cfg := configID(t, h, "probe", nil)
	h.Events()
	mustRun(t, h, baseReq(cfg, "afterdestroy"))
	deadline := time.Now().Add(3 * time.Second)
	var seen []Event
	for time.Now().Before(deadline) {
		ev, err := h.Events()
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, ev...)
		for _, e := range seen {
			if e.Type == "capi" && e.API == "HttpGetStringProperty" && (e.Status == CAPIFilterIsGone || e.Status == CAPIFilterIsDestroy) {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("no FilterIsGone/FilterIsDestroy for a call after OnDestroy; events %+v", seen)
}

func TestProperties(t *testing.T) {
	h := noopHost(t)
	cfg := configID(t, h, "probe", nil)
	paths := []string{
		"xds.cluster_name", "xds.cluster_metadata", "xds.cluster_metadata.filter_metadata.istio.services.0.name",
		"xds.cluster_metadata.filter_metadata.istio", "xds.route_name", "connection.mtls",
		"connection.uri_san_peer_certificate", "connection.uri_san_local_certificate", "response.code",
		"response.flags", "request.protocol", "request.total_size", "source.address", "upstream.address",
		"xds.node.id", "no.such.thing", "request.headers.x-in", "xds.upstream_host_metadata.filter_metadata.istio.workload",
		"response.total_size", "request.duration", "metadata.filter_metadata.envoy.lb.canary",
		"metadata.filter_metadata.lb.canary", "filter_state.fs.key",
	}
	r := baseReq(cfg, "props")
	r.Headers = append(r.Headers, [2]string{"x-probe-props", strings.Join(paths, ",")})
	r.Info = StreamInfo{
		Protocol: "HTTP/2", ResponseFlags: 0x20, RouteName: "r1", UpstreamCluster: "outbound|9080||reviews.default.svc.cluster.local",
		DownstreamRemote: "10.0.0.1:34567", UpstreamHost: "10.0.0.9:9080", RequestDuration: 1500 * time.Microsecond,
		TLS: &TLS{PeerCertificatePresented: true, PeerCertificateValidated: true,
			URISANPeer: []string{"spiffe://cluster.local/ns/default/sa/productpage"}, URISANLocal: []string{"spiffe://cluster.local/ns/default/sa/reviews"}},
	}
	r.Cluster = IstioClusterMetadata("reviews.default.svc.cluster.local", "reviews", "default")
	hostMeta, _ := structpb.NewStruct(map[string]interface{}{"workload": "reviews-v1;default;reviews;v1;Kubernetes"})
	r.Host = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": hostMeta}}
	canary, _ := structpb.NewStruct(map[string]interface{}{"canary": true})
	r.DynamicMetadata = map[string]*structpb.Struct{"envoy.lb": canary, "lb": canary}
	r.FilterState = map[string]string{"fs.key": "v"}
	r.ResponseHeaders = H(":status", "404")
	r.ResponseBody = [][]byte{[]byte("nope")}
	r.LogTypes = []int{LogDownstreamEnd}
	res := mustRun(t, h, r)

	got := map[string]string{}
	for i, p := range paths {
		v, ok := res.Downstream.Headers.Get(fmt.Sprintf("x-prop-%d", i))
		if !ok {
			t.Fatalf("no answer for %s", p)
		}
		if !strings.HasPrefix(v, "ERR:") {
			b, _ := base64.StdEncoding.DecodeString(v)
			v = string(b)
		}
		got[p] = v
	}
	clusterRaw, _ := proto.Marshal(r.Cluster)
	reqHdrBytes := 0
	for _, kv := range r.Headers {
		reqHdrBytes += len(kv[0]) + len(kv[1])
	}
	want := map[string]string{
		"xds.cluster_name": "outbound|9080||reviews.default.svc.cluster.local",
		"xds.cluster_metadata.filter_metadata.istio.services.0.name": "reviews",
		"xds.cluster_metadata.filter_metadata.istio":                 "ERR:serialization failure",
		"xds.route_name":                       "r1",
		"connection.mtls":                      "true",
		"connection.uri_san_peer_certificate":  "spiffe://cluster.local/ns/default/sa/productpage",
		"connection.uri_san_local_certificate": "spiffe://cluster.local/ns/default/sa/reviews",
		"response.code":                        "404",
		"response.flags":                       "32",
		"request.protocol":                     "HTTP/2",
		"request.total_size":                   fmt.Sprint(reqHdrBytes),
		"source.address":                       "10.0.0.1:34567",
		"upstream.address":                     "10.0.0.9:9080",
		"xds.node.id":                          "ERR:value not found", // Envoy v1.39.1: no local_info in the golang filter
		"no.such.thing":                        "ERR:value not found",
		"request.headers.x-in":                 "in",
		"xds.upstream_host_metadata.filter_metadata.istio.workload": "reviews-v1;default;reviews;v1;Kubernetes",
		"request.duration":                         "ERR:value not found", // only after completeRequest
		"metadata.filter_metadata.envoy.lb.canary": "ERR:value not found", // "envoy.lb" contains a dot
		"metadata.filter_metadata.lb.canary":       "true",
		"filter_state.fs.key":                      "ERR:value not found", // the key contains a dot too
		"response.total_size":                      "ERR:value not found", // set below
	}
	delete(want, "response.total_size")
	for p, w := range want {
		if got[p] != w {
			t.Errorf("%s = %q, want %q", p, got[p], w)
		}
	}
	if got["xds.cluster_metadata"] != string(clusterRaw) {
		var m corev3.Metadata
		if err := proto.Unmarshal([]byte(got["xds.cluster_metadata"]), &m); err != nil || !proto.Equal(&m, r.Cluster) {
			t.Errorf("xds.cluster_metadata does not decode to the cluster metadata: %v", err)
		}
	}
	// OnLog reads the same properties after completeRequest
	var logLine string
	for _, l := range res.Logs() {
		if strings.HasPrefix(l, "probe-onlog") {
			logLine = l
		}
	}
	if !strings.Contains(logLine, "code=404") || !strings.Contains(logLine, "request.duration="+base64.StdEncoding.EncodeToString([]byte("1.5ms"))) {
		t.Errorf("OnLog line %q", logLine)
	}
}

func TestNodeProperties(t *testing.T) {
	artifacts(t)
	node := &corev3.Node{Id: "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local", Cluster: "productpage.default"}
	node.Metadata, _ = structpb.NewStruct(map[string]interface{}{"NAMESPACE": "default", "LABELS": map[string]interface{}{"app": "productpage"}})
	h := shared(t, "node", Options{SO: noopSO, Node: node, NodeInCEL: true})
	cfg := configID(t, h, "probe", nil)
	r := baseReq(cfg, "props")
	r.Headers = append(r.Headers, [2]string{"x-probe-props", "xds.node.id,xds.node.metadata.NAMESPACE,xds.node.metadata.LABELS,xds.node"})
	res := mustRun(t, h, r)
	dec := func(i int) string {
		v, _ := res.Downstream.Headers.Get(fmt.Sprintf("x-prop-%d", i))
		if strings.HasPrefix(v, "ERR:") {
			return v
		}
		b, _ := base64.StdEncoding.DecodeString(v)
		return string(b)
	}
	if dec(0) != node.Id || dec(1) != "default" || dec(2) != "ERR:serialization failure" {
		t.Errorf("node props %q %q %q", dec(0), dec(1), dec(2))
	}
	var n corev3.Node
	if err := proto.Unmarshal([]byte(dec(3)), &n); err != nil || n.Id != node.Id {
		t.Errorf("xds.node does not decode: %v", err)
	}
}

func TestRouteConfigMerge(t *testing.T) {
	h := noopHost(t)
	cfg := configID(t, h, "probe", nil)
	rc, err := h.RouteConfig("probe", &anypb.Any{TypeUrl: "type.googleapis.com/x", Value: []byte("route")})
	if err != nil {
		t.Fatal(err)
	}
	r := baseReq(cfg, "mutate")
	r.Route = rc
	for i := 0; i < 2; i++ { // second request uses the cached merged id
		res := mustRun(t, h, r)
		noCAPIErrors(t, res)
	}
	if _, err := h.Config("probe", &anypb.Any{Value: []byte("fail")}); err == nil {
		t.Errorf("a config the parser rejects must fail like Envoy's")
	}
}

func TestTwoWorkers(t *testing.T) {
	h := noopHost(t)
	cfg := configID(t, h, "probe", nil)
	r := baseReq(cfg, "mutate")
	r.Worker = 1
	res := mustRun(t, h, r)
	if v, _ := res.Upstream.Headers.Get("x-probe-raw"); v != "in|1" || res.Worker != 1 {
		t.Errorf("worker id seen by Go %q (ran on %d)", v, res.Worker)
	}
	b, err := h.Bench(baseReq(cfg, "async,asyncdata,mutate"), 400, 2)
	if err != nil {
		t.Fatal(err)
	}
	if b.Errors != 0 || b.CAPIErrors != 0 {
		t.Errorf("bench on two workers: %+v", b)
	}
}

func TestNoLeaks(t *testing.T) {
	h := shared(t, "leak", Options{SO: noopSO, Workers: 2})
	cfg := configID(t, h, "probe", nil)
	r := baseReq(cfg, "mutate,async")
	r.Body = [][]byte{[]byte("a"), []byte("b")}
	b, err := h.Bench(r, 3000, 2)
	if err != nil {
		t.Fatal(err)
	}
	if b.Errors != 0 {
		t.Fatalf("bench errors %+v", b)
	}
	l, err := h.WaitNoLiveRequests(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if l.Requests != 0 || l.Filters != 0 {
		t.Errorf("live %+v", l)
	}
}

func TestNetworkFilter(t *testing.T) {
	h := noopHost(t)
	id, err := h.NetConfig("lib", &anypb.Any{TypeUrl: "type.googleapis.com/x", Value: []byte("echo")})
	if err != nil {
		t.Fatal(err)
	}
	h.Events()
	c, st, err := h.NewConn(id, "noop", "10.0.0.2:15006", "10.0.0.1:40000", 1)
	if err != nil || st != NetContinue {
		t.Fatalf("new conn: %v status %d", err, st)
	}
	if st, err := c.Data([]byte("hello"), false); err != nil || st != NetContinue {
		t.Fatalf("data: %v %d", err, st)
	}
	if _, err := c.Write([]byte("from-upstream"), false); err != nil {
		t.Fatal(err)
	}
	s, err := c.State()
	if err != nil {
		t.Fatal(err)
	}
	if string(s.Written) != "hello" || s.Closed {
		t.Errorf("state %+v", s)
	}
	if _, err := c.Data([]byte("close"), false); err != nil {
		t.Fatal(err)
	}
	s, err = c.State()
	if err != nil {
		t.Fatal(err)
	}
	if !s.Gone {
		t.Errorf("filter close did not end the connection: %+v", s)
	}
	ev, _ := h.Events()
	var sawAddr, sawClose bool
	for _, e := range ev {
		sawAddr = sawAddr || strings.Contains(e.Msg, "remote=10.0.0.1:40000 local=10.0.0.2:15006")
		sawClose = sawClose || strings.Contains(e.Msg, "net-noop event 1")
	}
	if !sawAddr || !sawClose {
		t.Errorf("events %+v", ev)
	}
}

// Envoy v1.39.1's golang network filter drains every read buffer after
// OnData (golang.cc Filter::onData: "TODO: do not drain buffer by default",
// data.drain(data.length())) but passes write buffers on intact
// (Filter::onWrite). The host mirrors both: even a filter that does nothing
// and answers Continue leaves no byte for the next read filter.
func TestNetworkFilterDrainsReads(t *testing.T) {
	h := noopHost(t)
	id, err := h.NetConfig("lib", &anypb.Any{TypeUrl: "type.googleapis.com/x", Value: []byte("quiet")})
	if err != nil {
		t.Fatal(err)
	}
	c, st, err := h.NewConn(id, "noop", "10.0.0.2:15006", "10.0.0.1:40001", 0)
	if err != nil || st != NetContinue {
		t.Fatalf("new conn: %v status %d", err, st)
	}
	for _, chunk := range []string{"GET / HTTP/1.1\r\n", "Host: x\r\n\r\n"} {
		if st, err := c.Data([]byte(chunk), false); err != nil || st != NetContinue {
			t.Fatalf("data: %v %d", err, st)
		}
	}
	if st, err := c.Data(nil, true); err != nil || st != NetContinue {
		t.Fatalf("end of data: %v %d", err, st)
	}
	if _, err := c.Write([]byte("HTTP/1.1 200 OK\r\n\r\n"), true); err != nil {
		t.Fatal(err)
	}
	s, err := c.State()
	if err != nil {
		t.Fatal(err)
	}
	if s.ReadIn != 27 || s.ReadForwarded != 0 {
		t.Errorf("reads: %d bytes to the filter, %d left for the next filter; want 27 and 0 (drained)", s.ReadIn, s.ReadForwarded)
	}
	if s.WriteIn != 19 || s.WriteForwarded != 19 {
		t.Errorf("writes: %d in, %d forwarded; want 19 and 19 (onWrite does not drain)", s.WriteIn, s.WriteForwarded)
	}
	if len(s.Written) != 0 || s.Closed {
		t.Errorf("the quiet filter acted on the connection: %+v", s)
	}
	if err := c.Event(EventRemoteClose); err != nil {
		t.Fatal(err)
	}
}

func TestSDKStatsMetrics(t *testing.T) {
	artifacts(t)
	h := shared(t, "sdkstats", Options{SO: sdkstatsSO})
	cfg := configID(t, h, "sdkstats", nil)
	r := &Request{Config: cfg, Headers: H(":method", "GET", ":path", "/", ":authority", "svc"),
		Info: StreamInfo{Protocol: "HTTP/1.1", UpstreamCluster: "c1", RequestDuration: 7 * time.Millisecond}}
	for i := 0; i < 3; i++ {
		mustRun(t, h, r)
	}
	ms, err := h.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	var total, labelled, bucket, sum uint64
	for _, m := range ms {
		switch {
		case m.Name == "sdkstats_requests_seen":
			total = m.Value
		case m.Name == "istio_requests_total;code=200;flags=0;cluster=c1;peer=unknown;local=unknown":
			labelled = m.Value
		case strings.HasPrefix(m.Name, "istio_request_duration_milliseconds_bucket;le=10;code=200"):
			bucket = m.Value
		case strings.HasPrefix(m.Name, "istio_request_duration_milliseconds_sum;code=200"):
			sum = m.Value
		}
	}
	if total != 3 || labelled != 3 || bucket != 3 || sum != 21 {
		t.Errorf("metrics total=%d labelled=%d bucket=%d sum=%d: %+v", total, labelled, bucket, sum, ms)
	}
}

func TestFormatDuration(t *testing.T) {
	for d, w := range map[time.Duration]string{0: "0", 1500 * time.Microsecond: "1.5ms", 2 * time.Second: "2s",
		time.Hour + 2*time.Minute + 3500*time.Millisecond: "1h2m3.5s", 999: "999ns", 1001: "1.001us"} {
		if g := FormatDuration(d); g != w {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, g, w)
		}
	}
}

// ---------------------------------------------------------------- benches

func benchReq(cfg uint64) *Request {
	return &Request{Config: cfg, Headers: H(":method", "GET", ":path", "/bench", ":authority", "svc", "user-agent", "bench")}
}

func runBench(b *testing.B, h *Host, cfg uint64, k int) {
	b.Helper()
	n := b.N
	if n < 100 {
		n = 100
	}
	b.ResetTimer()
	res, err := h.Bench(benchReq(cfg), n, k)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if res.Errors != 0 {
		b.Fatalf("bench errors: %+v", res)
	}
	b.ReportMetric(float64(res.CPUNS)/float64(res.N), "cpu-ns/req")
	b.ReportMetric(res.RequestsPerSecond(), "req/s")
}

// BenchmarkBoundaryFloor: the host's own per-request path with empty C
// functions in place of the Go entry points (no Go, no cgo crossing).
func BenchmarkBoundaryFloor(b *testing.B) {
	artifacts(b)
	h := shared(b, "floor", Options{Floor: true, Workers: 2})
	cfg := configID(b, h, "noop", nil)
	for _, k := range []int{1, 2} {
		b.Run(fmt.Sprintf("workers=%d", k), func(b *testing.B) { runBench(b, h, cfg, k) })
	}
}

// BenchmarkNoop: the SDK's per-request cost with a filter that does nothing
// (decode headers, encode headers, stream complete, log, destroy).
func BenchmarkNoop(b *testing.B) {
	artifacts(b)
	h := shared(b, "bench-noop", Options{SO: noopSO, Workers: 2})
	cfg := configID(b, h, "noop", nil)
	for _, k := range []int{1, 2} {
		b.Run(fmt.Sprintf("workers=%d", k), func(b *testing.B) { runBench(b, h, cfg, k) })
	}
}

// BenchmarkSDKStats: Istio-like metrics through the SDK's metric API
// (six properties and two metric updates in OnLog).
func BenchmarkSDKStats(b *testing.B) {
	artifacts(b)
	h := shared(b, "bench-sdkstats", Options{SO: sdkstatsSO, Workers: 2})
	cfg := configID(b, h, "sdkstats", nil)
	for _, k := range []int{1, 2} {
		b.Run(fmt.Sprintf("workers=%d", k), func(b *testing.B) { runBench(b, h, cfg, k) })
	}
}

// TestTwoSidecarRelay: a client sidecar and a server sidecar (two hosts,
// two Go runtimes) relay one request: the client's upstream headers are the
// server's request, the server's downstream response is the client's.
func TestTwoSidecarRelay(t *testing.T) {
	client := noopHost(t)
	server := shared(t, "server", Options{SO: noopSO})
	ccfg := configID(t, client, "probe", nil)
	scfg := configID(t, server, "probe", nil)

	req := baseReq(ccfg, "mutate")
	req.Body = [][]byte{[]byte("ping")}
	part, held, err := client.RunRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := part.Upstream.Headers.Get("x-probe-req"); v != "1" || string(part.Upstream.Body) != "ping" {
		t.Fatalf("client request side: %+v", part.Upstream)
	}
	sres := mustRun(t, server, &Request{Config: scfg, Headers: part.Upstream.Headers, Body: [][]byte{part.Upstream.Body},
		ResponseHeaders: H(":status", "200", "x-from-app", "1"), ResponseBody: [][]byte{[]byte("pong")}})
	cres, err := held.FinishWith(sres)
	if err != nil {
		t.Fatal(err)
	}
	if cres.Error != "" {
		t.Fatal(cres.Error)
	}
	d := cres.Downstream
	if v, _ := d.Headers.Get("x-from-app"); v != "1" || string(d.Body) != "pong" || !d.EndStream {
		t.Errorf("client downstream %+v", d)
	}
	if v, _ := d.Headers.Get("x-probe-resp"); v != "1" {
		t.Errorf("client encode phase did not run: %v (calls %s)", d.Headers, statuses(cres))
	}
	if s := statuses(cres); !strings.Contains(s, "OnHttpHeader/encode=Continue") || !strings.HasSuffix(s, "OnHttpDestroy/stream=") {
		t.Errorf("resumed calls %s", s)
	}
}
