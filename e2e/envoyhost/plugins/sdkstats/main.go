// Command sdkstats is a benchmark-only Envoy Go extension (.so): the
// comparator for "Istio-like request metrics through the SDK's own metric
// API". HTTP plugin "sdkstats" reads the attributes leanmesh's labels and
// values need in OnLog and records requests_total and the three histograms
// (as bucket + sum counters: the SDK has no histograms) with counters created
// by DefineCounterMetric. The SDK has no labels either, so each label
// combination becomes its own flat metric name, defined lazily the first time
// it is seen (a mutex-guarded cache).
//
// Build: go build -buildmode=c-shared -o sdkstats.so ./e2e/envoyhost/plugins/sdkstats
package main

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	"github.com/envoyproxy/envoy/contrib/golang/filters/http/source/go/pkg/http"
)

func init() {
	http.RegisterHttpFilterFactoryAndConfigParser("sdkstats", factory, &parser{})
}

type config struct {
	cb       api.ConfigCallbackHandler
	mu       sync.Mutex
	counters map[string]api.CounterMetric
	total    api.CounterMetric
}

type parser struct{}

func (p *parser) Parse(any *anypb.Any, cb api.ConfigCallbackHandler) (interface{}, error) {
	c := &config{cb: cb, counters: map[string]api.CounterMetric{}}
	if cb != nil { // nil for route-level configs
		c.total = cb.DefineCounterMetric("sdkstats_requests_seen")
	}
	return c, nil
}

func (p *parser) Merge(parent, child interface{}) interface{} { return parent }

func factory(c interface{}, cb api.FilterCallbackHandler) api.StreamFilter {
	return &filter{cfg: c.(*config), cb: cb}
}

type filter struct {
	api.PassThroughStreamFilter
	cfg *config
	cb  api.FilterCallbackHandler
}

func (f *filter) prop(name string) string {
	v, err := f.cb.GetProperty(name)
	if err != nil {
		return "unknown"
	}
	return v
}

// buckets are Envoy's default histogram bounds (the SDK has no histograms,
// so each histogram is emulated as one counter per bucket plus a sum).
var buckets = []uint64{1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

func bucketOf(v uint64) string {
	for _, b := range buckets {
		if v <= b {
			return strconv.FormatUint(b, 10)
		}
	}
	return "inf"
}

// OnLog records what leanmesh records per request — requests_total and the
// duration, request-size and response-size histograms, labelled from the same
// attributes — through the SDK's metric API: 8 property reads, 7 metric
// updates, each update a C call under a config-wide mutex.
func (f *filter) OnLog(api.RequestHeaderMap, api.RequestTrailerMap, api.ResponseHeaderMap, api.ResponseTrailerMap) {
	cfg := f.cfg
	if cfg.cb == nil {
		return
	}
	code := f.prop("response.code")
	flags := f.prop("response.flags")
	cluster := f.prop("xds.cluster_name")
	peer := f.prop("upstream.uri_san_peer_certificate")
	local := f.prop("upstream.uri_san_local_certificate")
	var dur, reqSize, respSize uint64
	if d, err := time.ParseDuration(f.prop("request.duration")); err == nil {
		dur = uint64(d / time.Millisecond)
	}
	reqSize, _ = strconv.ParseUint(f.prop("request.total_size"), 10, 64)
	respSize, _ = strconv.ParseUint(f.prop("response.total_size"), 10, 64)
	labels := strings.Join([]string{"code=" + code, "flags=" + flags, "cluster=" + cluster, "peer=" + peer, "local=" + local}, ";")

	cfg.total.Increment(1)
	cfg.counter("istio_requests_total;" + labels).Increment(1)
	for _, h := range []struct {
		name string
		v    uint64
	}{{"istio_request_duration_milliseconds", dur}, {"istio_request_bytes", reqSize}, {"istio_response_bytes", respSize}} {
		cfg.counter(h.name + "_bucket;le=" + bucketOf(h.v) + ";" + labels).Increment(1)
		cfg.counter(h.name + "_sum;" + labels).Increment(int64(h.v))
	}
}

// counter returns the flat counter for name, defining it on first use.
func (c *config) counter(name string) api.CounterMetric {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.counters[name]
	if !ok {
		m = c.cb.DefineCounterMetric(name)
		c.counters[name] = m
	}
	return m
}

func main() {}
