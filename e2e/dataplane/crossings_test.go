package dataplane

import (
	"fmt"

	dto "github.com/prometheus/client_model/go"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/leanmesh/leanmesh/e2e/envoyhost"
)

// A shape is one kind of request the benchmarks and the pinned counts use:
// outbound and inbound, HTTP and gRPC, each in leanmesh's steady state
// (cached peer, known series). The same requests go through the no-op and
// the SDK-metrics filters (they ignore direction).
type shape struct {
	name    string
	inbound bool
	mk      func(t testing.TB, config uint64) *envoyhost.Request
}

var shapes = []shape{
	{"out-http", false, steadyRequest},
	{"in-http", true, inboundRequest},
	{"out-grpc", false, grpcOutboundRequest},
	{"in-grpc", true, grpcInboundRequest},
}

// grpcMessage is one length-prefixed gRPC message of n payload bytes.
func grpcMessage(n int) []byte { return append([]byte{0, 0, 0, 0, byte(n)}, make([]byte, n)...) }

// inboundRequest is reviews' client sidecar calling this (productpage) pod
// over mTLS with its MX headers: the server side's steady state.
func inboundRequest(t testing.TB, config uint64) *envoyhost.Request {
	_, meta := meshCluster("productpage", "bookinfo", "9080")
	return &envoyhost.Request{Config: config,
		Headers: append(envoyhost.H(":method", "GET", ":path", "/productpage", ":authority", "productpage:9080", ":scheme", "http",
			"user-agent", "curl/8.0", "accept", "*/*", "x-request-id", "3b8e-4f"), reviewsMX(t)...),
		Info: envoyhost.StreamInfo{Protocol: "HTTP/1.1", UpstreamCluster: "inbound|9080||", RequestDuration: 3 * time.Millisecond,
			TLS: &envoyhost.TLS{PeerCertificatePresented: true, PeerCertificateValidated: true,
				URISANPeer: []string{reviews.spiffe()}, URISANLocal: []string{productpage.spiffe()}}},
		Cluster:         meta,
		ResponseHeaders: envoyhost.H(":status", "200", "content-type", "text/html", "content-length", "5183"),
	}
}

func grpcify(r *envoyhost.Request) *envoyhost.Request {
	r.Headers = append(r.Headers, [2]string{"content-type", "application/grpc"})
	r.Headers[1][1] = "/reviews.Reviews/Get"
	r.Body = [][]byte{grpcMessage(12)}
	for i, h := range r.ResponseHeaders {
		if h[0] == "content-type" {
			r.ResponseHeaders[i][1] = "application/grpc"
		}
	}
	r.ResponseBody = [][]byte{grpcMessage(40)}
	r.ResponseTrailers = envoyhost.H("grpc-status", "0")
	r.Info.Protocol = "HTTP/2"
	return r
}

func grpcOutboundRequest(t testing.TB, config uint64) *envoyhost.Request {
	return grpcify(steadyRequest(t, config))
}

func grpcInboundRequest(t testing.TB, config uint64) *envoyhost.Request {
	return grpcify(inboundRequest(t, config))
}

// countRun benches r n times on one worker and returns its per-request counts.
// Non-OK C API answers (a property the comparator asks for that an inbound
// request lacks) are the filter's business; leanmesh's are checked by the pins.
func countRun(t testing.TB, h *envoyhost.Host, r *envoyhost.Request, n int) envoyhost.Crossings {
	t.Helper()
	res, err := h.Bench(r, n, 1)
	if err != nil || res.Errors != 0 || res.LocalReplies != 0 {
		t.Fatalf("bench: %v %+v", err, res)
	}
	return res.PerRequest()
}

// kinds renders ByKind as "Kind=n Kind=n" in name order.
func kinds(m map[string]float64) string {
	var ks []string
	for k, v := range m {
		ks = append(ks, fmt.Sprintf("%s=%g", k, v))
	}
	sort.Strings(ks)
	return strings.Join(ks, " ")
}

// variants: the filters the benchmarks and the pins compare, each on its own
// host with 2 workers. leanmesh runs as a productpage sidecar.
type countVariant struct {
	name    string
	h       *envoyhost.Host
	in, out uint64 // configs for inbound and outbound shapes
}

func startVariants(t testing.TB) []countVariant {
	t.Helper()
	artifacts(t)
	start := func(opts envoyhost.Options, plugin string) countVariant {
		opts.HostBin, opts.Workers, opts.LogLevel = art.host, 2, 4
		h, err := envoyhost.Start(opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		id, err := h.Config(plugin, nil)
		if err != nil {
			t.Fatal(err)
		}
		return countVariant{plugin, h, id, id}
	}
	lm := startSidecar(t, productpage, 2, nil)
	return []countVariant{
		{"leanmesh", lm.h, lm.inbound, lm.outbound},
		start(envoyhost.Options{SO: art.noop}, "noop"),
		start(envoyhost.Options{SO: art.sdkstats}, "sdkstats"),
	}
}

func (v countVariant) request(t testing.TB, sh shape) *envoyhost.Request {
	if sh.inbound {
		return sh.mk(t, v.in)
	}
	return sh.mk(t, v.out)
}

// gcPaced are crossings Go's garbage collector makes, not the request: the
// SDK's finalizer of each httpRequest calls HttpFinalize once per request,
// whenever a GC cycle runs. They are reported, never pinned.
var gcPaced = map[string]bool{"HttpFinalize": true, "ConfigHttpFinalize": true}

// requestPath sums the calls per request on the request path.
func requestPath(c envoyhost.Crossings) (c2go, go2c float64) {
	for k, v := range c.ByKind {
		switch {
		case gcPaced[k]:
		case strings.HasPrefix(k, "On") || k == "RequestSemaDec":
			c2go += v
		default:
			go2c += v
		}
	}
	return c2go, go2c
}

// pin is one pinned count: calls per request of a kind, and why they are
// needed. A change that adds a crossing fails TestCrossingsPinned until its
// reason is written here.
type pin struct {
	n   float64
	why string
}

// Go->C calls of a cached-peer request, each with the value it reads or
// writes. The reads go through leanmesh's direct reader
// (filters/cmd/leanmesh/reads.go): the same C functions as the SDK's methods,
// without their per-call allocations.
var httpPins = map[string]pin{
	"OnHttpHeader":         {2, "request and response headers: Envoy calls decodeHeaders and encodeHeaders"},
	"OnHttpLog":            {1, "the access-log callback, where Istio's stats filter records"},
	"OnHttpStreamComplete": {1, "the SDK always calls it (Filter::onStreamComplete)"},
	"OnHttpDestroy":        {1, "the SDK always calls it (Filter::onDestroy)"},
	"HttpCopyHeaders": {1, "the request headers in one copy: content-type and :path (Envoy's Grpc::Common::isGrpcRequestHeaders, " +
		"request_protocol), and the MX id and value (inbound: the peer; outbound: an app's MX to strip). Istio's " +
		"MXMethod::derivePeerInfo needs the value present even for a cached id, so both are read; one copy replaces 3 GetHeader"},
	"HttpGetStringValue":    {1, "upstream cluster name: service labels and the MX decision"},
	"HttpGetStringProperty": {3, "response.flags, the peer SAN, request.duration (StreamInfo::requestComplete, measured from the stream's start: no Go clock gives it); the local SAN is cached per cluster when the peer SAN is present; request and response total_size come from OnLog's header sizes plus the data callbacks' body bytes"},
	"HttpSetHeaderHelper":   {2, "outbound: our MX and MX id toward the server; inbound: echoed on the response (MXPropagationMethod::inject: one call per header)"},
	"HttpRemoveHeader":      {2, "the peer's MX and MX id are stripped before the app sees them (MXMethod::remove: one call per header)"},
}

// Per direction: outbound also copies the response headers (the server's MX
// id and value, and :status), which makes the response code read
// unnecessary; inbound reads the response code from StreamInfo.
var (
	outPins = map[string]pin{
		"HttpCopyHeaders": {2, httpPins["HttpCopyHeaders"].why + "; and the response headers in one copy: the server's MX id and value, " +
			"and :status, which is StreamInfo's response code because leanmesh is the last encoder filter in exchange mode " +
			"(INSERT_FIRST; ActiveStream::encodeHeaders -> chargeStats -> setResponseCode): no GetIntegerValue"},
	}
	inPins = map[string]pin{
		"HttpGetIntegerValue": {1, "response code (StreamInfo::responseCode): inbound reads no response header it could take :status from"},
	}
)

var grpcPins = map[string]pin{
	"OnHttpHeader":     {3, "request headers, response headers and response trailers"},
	"OnHttpData":       {2, "one request and one response data frame: Envoy calls decodeData/encodeData per frame"},
	"HttpGetBuffer":    {2, "gRPC message counting reads each data frame's bytes (the SDK has no length-only peek at the frame headers; Envoy's grpc_stats filter state is not readable from Go)"},
	"HttpCopyTrailers": {1, "grpc-status from the response trailers (Grpc::Common::getGrpcStatus): a GetRaw on a trailer map reads the header map, so the trailers are copied"},
}

// pinsFor is the pinned set of a shape.
func pinsFor(name string) map[string]pin {
	m := map[string]pin{}
	for k, v := range httpPins {
		m[k] = v
	}
	dir := inPins
	if strings.HasPrefix(name, "out-") {
		dir = outPins
	}
	for k, v := range dir {
		m[k] = v
	}
	if strings.HasSuffix(name, "grpc") {
		for k, v := range grpcPins {
			m[k] = v
		}
	}
	return m
}

// allocPins bounds Go allocations per request through the ABI, by shape;
// TestAllocationsAttributed names each one's source line. Before issue #15:
// 25 (HTTP) and 36 (gRPC); then 19 and 30. All that remain are the SDK's own
// (the no-op filter's count: 6 per HTTP request, 10 per gRPC request); the
// per-stream filter object comes from a pool.
var allocPins = map[string]float64{"out-http": 6, "in-http": 6, "out-grpc": 10, "in-grpc": 10}

// TestCrossingsPinned: every C->Go callback and Go->C call leanmesh makes per
// steady-state request, by kind, is pinned with its reason; allocations per
// request are bounded. Counts do not depend on the machine's speed.
func TestCrossingsPinned(t *testing.T) {
	vs := startVariants(t)
	lm := vs[0]
	for _, sh := range shapes {
		pins := pinsFor(sh.name)
		c := countRun(t, lm.h, lm.request(t, sh), 2000)
		for k, v := range c.ByKind {
			if gcPaced[k] {
				continue
			}
			p, ok := pins[k]
			if !ok {
				t.Errorf("%s: %g %s per request is not pinned: write its reason in the pins", sh.name, v, k)
			} else if v != p.n {
				t.Errorf("%s: %s = %g per request, pinned %g (%s)", sh.name, k, v, p.n, p.why)
			}
		}
		for k, p := range pins {
			if _, ok := c.ByKind[k]; !ok {
				t.Errorf("%s: %s pinned at %g but not called: update the pin", sh.name, k, p.n)
			}
		}
		// +0.5: the SDK's finalizers and the GC allocate now and then, not
		// per request.
		if c.Allocs < 0 || c.Allocs > allocPins[sh.name]+0.5 {
			t.Errorf("%s: %.2f Go allocations per request, bound %g", sh.name, c.Allocs, allocPins[sh.name])
		}
		c2go, go2c := requestPath(c)
		t.Logf("%s leanmesh: C->Go %g, Go->C %g, allocs %.2f (%.0f B)\n  %s\n  keys %s", sh.name, c2go, go2c, c.Allocs, c.AllocByte, kinds(c.ByKind), kinds(c.Keys))
		for _, v := range vs[1:] {
			c := countRun(t, v.h, v.request(t, sh), 2000)
			c2go, go2c := requestPath(c)
			t.Logf("%s %s: C->Go %g, Go->C %g, allocs %.2f (%.0f B): %s", sh.name, v.name, c2go, go2c, c.Allocs, c.AllocByte, kinds(c.ByKind))
		}
	}
}

// TestTotalSizesMatchProperties: the request and response sizes leanmesh
// derives from OnLog's header sizes and the data callbacks' body bytes equal
// Envoy's request.total_size and response.total_size, which a library with
// the SDK's header writer (no direct access to the sizes) reads as
// properties. Same requests, both libraries, equal histograms.
func TestTotalSizesMatchProperties(t *testing.T) {
	direct := startSidecar(t, productpage, 1, nil)
	viaProps := startSidecarEnv(t, productpage, 1, nil, []string{"LEANMESH_SDK_HEADERS=1"})
	for _, sh := range shapes {
		for _, s := range []*sidecar{direct, viaProps} {
			cfg := s.outbound
			if sh.inbound {
				cfg = s.inbound
			}
			r := sh.mk(t, cfg)
			r.Body = append(r.Body, []byte("0123456789"))
			r.ResponseBody = append(r.ResponseBody, make([]byte, 1000))
			if r.ResponseTrailers == nil {
				r.ResponseTrailers = envoyhost.H("x-trailer", "t")
			}
			if res, err := s.h.Run(r); err != nil || res.Error != "" {
				t.Fatalf("%s: %v %+v", sh.name, err, res)
			}
		}
	}
	for _, fam := range []string{"istio_request_bytes", "istio_response_bytes"} {
		d, p := series(direct.scrape(t), fam, nil), series(viaProps.scrape(t), fam, nil)
		if len(d) == 0 || len(d) != len(p) {
			t.Fatalf("%s: %d series direct, %d via properties", fam, len(d), len(p))
		}
		sum := func(ms []*dto.Metric) (s float64, n uint64) {
			for _, m := range ms {
				s += m.GetHistogram().GetSampleSum()
				n += m.GetHistogram().GetSampleCount()
			}
			return s, n
		}
		ds, dn := sum(d)
		ps, pn := sum(p)
		if ds != ps || dn != pn || dn != uint64(len(shapes)) {
			t.Errorf("%s: direct sum %v over %d, via properties %v over %d", fam, ds, dn, ps, pn)
		}
		t.Logf("%s: sum %v over %d requests, both ways", fam, ds, dn)
	}
}

// TestDirectReadsMatchSDK guards the hand-written direct reader
// (filters/cmd/leanmesh/reads.go) against the SDK's own read calls: the same
// requests through a library reading each way (LEANMESH_SDK_READS=1) give
// the same series, values and histograms. Beyond the four steady shapes:
// gRPC-Web (not gRPC), a 503 with response flags and no MX (the endpoint
// fallback, StreamInfo's code), duplicated MX headers (the first value
// wins, as HeaderMap::get(key)[0]), and a cluster without service metadata
// (the Host header).
func TestDirectReadsMatchSDK(t *testing.T) {
	direct := startSidecar(t, productpage, 1, nil)
	viaSDK := startSidecarEnv(t, productpage, 1, nil, []string{"LEANMESH_SDK_READS=1"})
	type tc struct {
		name string
		mk   func(cfgIn, cfgOut uint64) *envoyhost.Request
	}
	cases := []tc{}
	for _, sh := range shapes {
		sh := sh
		cases = append(cases, tc{sh.name, func(in, out uint64) *envoyhost.Request {
			if sh.inbound {
				return sh.mk(t, in)
			}
			return sh.mk(t, out)
		}})
	}
	cases = append(cases,
		tc{"grpc-web", func(_, out uint64) *envoyhost.Request {
			r := steadyRequest(t, out)
			r.Headers = append(r.Headers, [2]string{"content-type", "application/grpc-web+proto"})
			return r
		}},
		tc{"503-flags-no-mx", func(_, out uint64) *envoyhost.Request {
			r := steadyRequest(t, out)
			r.ResponseHeaders = envoyhost.H(":status", "503", "content-length", "19")
			r.Info.ResponseFlags = 0x2 | 0x20 // UH, UO
			return r
		}},
		tc{"duplicate-mx", func(in, _ uint64) *envoyhost.Request {
			// The bad pair first: a reader that took the last value would
			// find the valid peer and differ.
			r := inboundRequest(t, in)
			r.Headers = append(envoyhost.H("x-envoy-peer-metadata", "not-base64!", "x-envoy-peer-metadata-id", "other"), r.Headers...)
			return r
		}},
		tc{"no-service-metadata", func(_, out uint64) *envoyhost.Request {
			r := steadyRequest(t, out)
			r.Info.UpstreamCluster, r.Cluster = "outbound|80||example.com", nil
			return r
		}},
	)
	for _, c := range cases {
		for i, s := range []*sidecar{direct, viaSDK} {
			if res, err := s.h.Run(c.mk(s.inbound, s.outbound)); err != nil || res.Error != "" {
				t.Fatalf("%s (sidecar %d): %v %+v", c.name, i, err, res)
			}
		}
	}
	lines := func(s *sidecar) []string {
		var out []string
		for _, l := range strings.Split(string(s.scrapeText(t)), "\n") {
			if strings.HasPrefix(l, "istio_") {
				out = append(out, l)
			}
		}
		sort.Strings(out)
		return out
	}
	d, v := lines(direct), lines(viaSDK)
	if strings.Join(d, "\n") != strings.Join(v, "\n") {
		t.Errorf("direct reads and SDK reads differ:\ndirect:\n%s\nSDK:\n%s", strings.Join(d, "\n"), strings.Join(v, "\n"))
	}
	var reqs int
	for _, l := range d {
		if strings.HasPrefix(l, "istio_requests_total{") {
			reqs++
		}
	}
	if reqs < 7 {
		t.Errorf("only %d istio_requests_total series: the cases did not record", reqs)
	}
	t.Logf("%d istio_* lines identical, %d request series", len(d), reqs)
}
