package envoyhost

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/anypb"
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
	if _, err := h.Events(); err != nil { // drops what came before the request
		t.Fatal(err)
	}
	mustRun(t, h, baseReq(cfg, "afterdestroy"))
	deadline := time.Now().Add(30 * time.Second)
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
	l, err := h.WaitNoLiveRequests(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if l.Requests != 0 || l.Filters != 0 {
		t.Errorf("live %+v", l)
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
