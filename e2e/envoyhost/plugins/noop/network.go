package main

import (
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	"github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network"
)

// netConfigFactory builds the network "noop" filter. The config is the
// global parser's output (*anypb.Any); value "echo" makes the filter write
// every read chunk back to the downstream and log its addresses, so the
// host's write/close/info paths can be tested.
type netConfigFactory struct{}

func (netConfigFactory) CreateFactoryFromConfig(config interface{}) network.FilterFactory {
	echo := false
	if a, ok := config.(*anypb.Any); ok && string(a.GetValue()) == "echo" {
		echo = true
	}
	return &netFilterFactory{echo: echo}
}

type netFilterFactory struct{ echo bool }

func (f *netFilterFactory) CreateFilter(cb api.ConnectionCallback) api.DownstreamFilter {
	return &netFilter{cb: cb, echo: f.echo}
}

type netFilter struct {
	api.EmptyDownstreamFilter
	cb   api.ConnectionCallback
	echo bool
}

func (f *netFilter) OnNewConnection() api.FilterStatus {
	if f.echo {
		// UpstreamRemoteAddress on a downstream callback returns the
		// downstream remote address (SDK naming quirk).
		remote, _ := f.cb.StreamInfo().UpstreamRemoteAddress()
		local, _ := f.cb.StreamInfo().UpstreamLocalAddress()
		api.LogInfof("net-noop new connection remote=%s local=%s", remote, local)
	}
	return api.NetworkFilterContinue
}

func (f *netFilter) OnData(buf []byte, end bool) api.FilterStatus {
	if f.echo && len(buf) > 0 {
		f.cb.Write(buf, false)
		if string(buf) == "close" {
			f.cb.Close(api.NoFlush)
		}
	}
	return api.NetworkFilterContinue
}

func (f *netFilter) OnEvent(e api.ConnectionEvent) {
	if f.echo {
		api.LogInfof("net-noop event %d", int(e))
	}
}
