// Command leanmesh is built as leanmesh.so (go build -buildmode=c-shared) and
// loaded by Envoy's golang filters. It is the only package that imports the
// SDK's cgo shims: importing them into a test binary crashes at init.
package main

import (
	"github.com/envoyproxy/envoy/contrib/golang/filters/http/source/go/pkg/http"
	"github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network"

	"github.com/leanmesh/leanmesh/filters/pluginconfig"

	"github.com/leanmesh/leanmesh/filters/httpstats"
	"github.com/leanmesh/leanmesh/filters/tcpstats"
)

func init() {
	http.RegisterHttpFilterFactoryAndConfigParser(pluginconfig.PluginHTTP, httpstats.Factory, httpstats.Parser{})
	network.RegisterNetworkFilterConfigFactory(pluginconfig.PluginTCP, tcpFactory{})
	// The SDK has one parser for all network plugins; leanmesh-tcp is ours only.
	network.RegisterNetworkFilterConfigParser(tcpstats.Parser{})
}

// tcpFactory adapts tcpstats.Factory to the SDK's interface types, which live
// in the cgo package tcpstats cannot import.
type tcpFactory struct{}

func (tcpFactory) CreateFactoryFromConfig(config interface{}) network.FilterFactory {
	return tcpstats.Factory{}.CreateFactoryFromConfig(config)
}

func main() {}
