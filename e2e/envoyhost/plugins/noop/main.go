// Command noop is a benchmark/test-only Envoy Go extension (.so) for the
// envoyhost test host. It registers:
//   - HTTP plugin "noop": does nothing (returns Continue everywhere); the
//     baseline cost of the SDK boundary.
//   - HTTP plugin "probe": test behaviours selected by the request header
//     x-probe (see probe.go); used to exercise every phase of the host.
//   - network plugin "noop": a no-op downstream TCP filter, plus "echo"
//     behaviour when its config value is "echo" (writes data back).
//
// Build: go build -buildmode=c-shared -o noop.so ./e2e/envoyhost/plugins/noop
package main

import (
	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	"github.com/envoyproxy/envoy/contrib/golang/filters/http/source/go/pkg/http"
	"github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network"
)

func init() {
	http.RegisterHttpFilterFactoryAndConfigParser("noop", noopFactory, http.NullParser)
	http.RegisterHttpFilterFactoryAndConfigParser("probe", probeFactory, &probeParser{})
	network.RegisterNetworkFilterConfigFactory("noop", &netConfigFactory{})
}

func noopFactory(config interface{}, callbacks api.FilterCallbackHandler) api.StreamFilter {
	return &noopFilter{}
}

// noopFilter embeds PassThroughStreamFilter: every phase returns Continue.
type noopFilter struct {
	api.PassThroughStreamFilter
}

func main() {}
