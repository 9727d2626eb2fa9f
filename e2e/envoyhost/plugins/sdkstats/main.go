// Command sdkstats is a benchmark-only Envoy Go extension (.so): the
// comparator for "Istio-like request metrics through the SDK's own metric
// API". HTTP plugin "sdkstats" reads six properties in OnLog and records a
// request count and one duration value per request with counters/gauges
// created by DefineCounterMetric/DefineGaugeMetric. The SDK has no labels,
// so each label combination becomes its own flat metric name, defined
// lazily the first time it is seen (a mutex-guarded cache).
//
// Build: go build -buildmode=c-shared -o sdkstats.so ./e2e/envoyhost/plugins/sdkstats
package main

import (
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
	gauges   map[string]api.GaugeMetric
	total    api.CounterMetric
}

type parser struct{}

func (p *parser) Parse(any *anypb.Any, cb api.ConfigCallbackHandler) (interface{}, error) {
	c := &config{cb: cb, counters: map[string]api.CounterMetric{}, gauges: map[string]api.GaugeMetric{}}
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

func (f *filter) OnLog(api.RequestHeaderMap, api.RequestTrailerMap, api.ResponseHeaderMap, api.ResponseTrailerMap) {
	cfg := f.cfg
	if cfg.cb == nil {
		return
	}
	code := f.prop("response.code")
	flags := f.prop("response.flags")
	proto := f.prop("request.protocol")
	cluster := f.prop("xds.cluster_name")
	mtls := f.prop("connection.mtls")
	dur := f.prop("request.duration")
	labels := strings.Join([]string{"code=" + code, "flags=" + flags, "proto=" + proto, "cluster=" + cluster, "mtls=" + mtls}, ";")
	var ms uint64
	if d, err := time.ParseDuration(dur); err == nil {
		ms = uint64(d / time.Millisecond)
	}

	cfg.mu.Lock()
	c, ok := cfg.counters[labels]
	if !ok {
		c = cfg.cb.DefineCounterMetric("istio_requests_total;" + labels)
		cfg.counters[labels] = c
	}
	g, ok := cfg.gauges[labels]
	if !ok {
		g = cfg.cb.DefineGaugeMetric("istio_request_duration_milliseconds_last;" + labels)
		cfg.gauges[labels] = g
	}
	cfg.mu.Unlock()

	cfg.total.Increment(1)
	c.Increment(1)
	g.Record(ms)
}

func main() {}
