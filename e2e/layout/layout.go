// Package layout checks, on the listeners and clusters istiod actually serves
// to a proxy, the filter layout each leanmesh mode promises (docs/tcp.md):
//
//   - LeanMesh (hybrid): every HTTP connection manager runs leanmesh first and
//     neither istio.stats nor istio.metadata_exchange as HTTP filters; every
//     TCP chain keeps Istio's istio.stats network filter, inbound TCP chains
//     keep Istio's TCP exchange (istio.metadata_exchange network filter) and
//     outbound clusters keep it as an upstream filter.
//   - Shadow: Istio's HTTP stats and exchange stay beside leanmesh.
//   - Istio: no leanmesh anywhere, Istio's stats everywhere.
//
// The controller's real-istiod test and the demo share it, so both assert the
// same thing.
package layout

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/wellknown"

	"github.com/leanmesh/leanmesh/filters/pluginconfig"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/render"
	"github.com/leanmesh/leanmesh/e2e/cluster"
)

// Filter names as istiod writes them: Istio's are render's
// (IstioStatsFilter, IstioMXFilter), Envoy's go-control-plane's
// pkg/wellknown.

// Context is where a chain sits.
type Context string

const (
	Inbound  Context = "inbound"
	Outbound Context = "outbound"
	Gateway  Context = "gateway"
)

// Chain is one filter chain as served.
type Chain struct {
	Listener       string
	Name           string
	Context        Context
	HTTP           bool     // terminates in an HTTP connection manager
	NetworkFilters []string // in order
	HTTPFilters    []string // in order, HTTP chains only
}

func (c Chain) String() string {
	s := fmt.Sprintf("%s %s/%s: %s", c.Context, c.Listener, c.Name, strings.Join(c.NetworkFilters, " → "))
	if c.HTTP {
		s += " [" + strings.Join(c.HTTPFilters, " → ") + "]"
	}
	return s
}

// Chains lists the HTTP and TCP proxy chains of every listener in s (the
// leanmesh scrape listener excluded: it is leanmesh's own, not a traffic
// path). gateway says the proxy is a router: its chains are Gateway chains.
func Chains(s cluster.Snapshot, gateway bool) []Chain {
	var out []Chain
	for _, name := range s.Names(cluster.TypeListener) {
		if name == render.ExpositionListener {
			continue
		}
		l := s.Listener(name)
		if l == nil {
			continue
		}
		ctx := Outbound
		switch {
		case gateway:
			ctx = Gateway
		case name == "virtualInbound":
			ctx = Inbound
		}
		fcs := slices.Clone(l.GetFilterChains())
		if l.GetDefaultFilterChain() != nil {
			fcs = append(fcs, l.GetDefaultFilterChain())
		}
		for _, fc := range fcs {
			if c, ok := chain(name, ctx, fc); ok {
				out = append(out, c)
			}
		}
	}
	return out
}

func chain(listener string, ctx Context, fc *listenerv3.FilterChain) (Chain, bool) {
	c := Chain{Listener: listener, Name: fc.GetName(), Context: ctx}
	terminal := false
	for _, f := range fc.GetFilters() {
		c.NetworkFilters = append(c.NetworkFilters, f.GetName())
		switch f.GetName() {
		case wellknown.TCPProxy:
			terminal = true
		case wellknown.HTTPConnectionManager:
			terminal, c.HTTP = true, true
			hcm := &hcmv3.HttpConnectionManager{}
			if err := proto.Unmarshal(f.GetTypedConfig().GetValue(), hcm); err == nil {
				for _, hf := range hcm.GetHttpFilters() {
					c.HTTPFilters = append(c.HTTPFilters, hf.GetName())
				}
			}
		}
	}
	return c, terminal
}

// Report is the outcome of Check: the chains it looked at, by kind.
type Report struct {
	Chains        []Chain
	OutboundMXAt  []string // outbound clusters carrying Istio's TCP exchange
	HTTP, TCP     map[Context]int
	ClustersCheck int
}

// Summary is one line per context: how many HTTP and TCP chains were checked.
func (r Report) Summary() string {
	var parts []string
	for _, c := range []Context{Inbound, Outbound, Gateway} {
		if r.HTTP[c]+r.TCP[c] > 0 {
			parts = append(parts, fmt.Sprintf("%s: %d HTTP, %d TCP chains", c, r.HTTP[c], r.TCP[c]))
		}
	}
	if r.ClustersCheck > 0 {
		parts = append(parts, fmt.Sprintf("%d outbound TCP clusters with Istio's exchange", r.ClustersCheck))
	}
	return strings.Join(parts, "; ")
}

// Want says what a check must find at least, so it cannot pass on an empty
// or partial snapshot.
type Want struct {
	// Contexts that must have at least one HTTP and one TCP chain.
	Contexts []Context
	// TCPClusters are outbound clusters (e.g. outbound|5432||db.shop.svc...)
	// that must carry Istio's TCP exchange as an upstream filter.
	TCPClusters []string
	// InboundTCPChains are virtualInbound chain names (e.g. "0.0.0.0_5432")
	// that must start with Istio's TCP exchange.
	InboundTCPChains []string
}

// Check verifies the layout of mode on snapshot s; nil error means every
// HTTP and TCP chain is as the mode promises and want is met.
func Check(s cluster.Snapshot, gateway bool, mode v1alpha1.Mode, want Want) (Report, error) {
	r := Report{Chains: Chains(s, gateway), HTTP: map[Context]int{}, TCP: map[Context]int{}}
	var errs []string
	for _, c := range r.Chains {
		var err error
		if c.HTTP {
			r.HTTP[c.Context]++
			err = checkHTTP(c, mode)
		} else {
			r.TCP[c.Context]++
			err = checkTCP(c)
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%v (%s)", err, c))
		}
	}
	for _, ctx := range want.Contexts {
		if r.HTTP[ctx] == 0 || r.TCP[ctx] == 0 {
			errs = append(errs, fmt.Sprintf("%s: %d HTTP and %d TCP chains, want both", ctx, r.HTTP[ctx], r.TCP[ctx]))
		}
	}
	for _, name := range want.InboundTCPChains {
		found := false
		for _, c := range r.Chains {
			if c.Context == Inbound && c.Name == name && !c.HTTP {
				found = true
				if len(c.NetworkFilters) == 0 || c.NetworkFilters[0] != render.IstioMXFilter {
					errs = append(errs, fmt.Sprintf("inbound TCP chain %s does not start with %s: %v", name, render.IstioMXFilter, c.NetworkFilters))
				}
			}
		}
		if !found {
			errs = append(errs, "no inbound TCP chain "+name)
		}
	}
	for _, name := range want.TCPClusters {
		cl := s.Cluster(name)
		if cl == nil {
			errs = append(errs, "no cluster "+name)
			continue
		}
		var names []string
		for _, f := range cl.GetFilters() {
			names = append(names, f.GetName())
		}
		if !slices.Contains(names, render.IstioMXFilter) {
			errs = append(errs, fmt.Sprintf("cluster %s: upstream filters %v lack %s", name, names, render.IstioMXFilter))
			continue
		}
		r.ClustersCheck++
		r.OutboundMXAt = append(r.OutboundMXAt, name)
	}
	sort.Strings(errs)
	if len(errs) > 0 {
		return r, fmt.Errorf("%s layout: %s", mode, strings.Join(errs, "; "))
	}
	return r, nil
}

func checkHTTP(c Chain, mode v1alpha1.Mode) error {
	f := c.HTTPFilters
	lean := slices.Contains(f, pluginconfig.PluginHTTP)
	switch mode {
	case v1alpha1.ModeLeanMesh:
		if len(f) == 0 || f[0] != pluginconfig.PluginHTTP {
			return fmt.Errorf("HTTP chain does not start with %s", pluginconfig.PluginHTTP)
		}
		if slices.Contains(f, render.IstioStatsFilter) || slices.Contains(f, render.IstioMXFilter) {
			return fmt.Errorf("HTTP chain still runs Istio's HTTP stats or exchange")
		}
	case v1alpha1.ModeShadow:
		if !lean || !slices.Contains(f, render.IstioStatsFilter) {
			return fmt.Errorf("shadow HTTP chain needs both %s and %s", pluginconfig.PluginHTTP, render.IstioStatsFilter)
		}
		if c.Context != Gateway && !slices.Contains(f, render.IstioMXFilter) {
			return fmt.Errorf("shadow HTTP chain lost Istio's exchange")
		}
	default:
		if lean || !slices.Contains(f, render.IstioStatsFilter) {
			return fmt.Errorf("HTTP chain in Istio mode must have %s and no %s", render.IstioStatsFilter, pluginconfig.PluginHTTP)
		}
	}
	return nil
}

// checkTCP: the same in every mode. leanmesh never touches a TCP chain.
func checkTCP(c Chain) error {
	f := c.NetworkFilters
	if slices.Contains(f, pluginconfig.PluginHTTP) || slices.Contains(f, pluginconfig.PluginTCP) {
		return fmt.Errorf("TCP chain runs a leanmesh filter")
	}
	stats, proxy := slices.Index(f, render.IstioStatsFilter), slices.Index(f, wellknown.TCPProxy)
	if stats < 0 || stats > proxy {
		return fmt.Errorf("TCP chain lacks %s before %s", render.IstioStatsFilter, wellknown.TCPProxy)
	}
	return nil
}

// PluginConfig pulls the leanmesh HTTP filter's plugin_config out of the
// chains istiod served (chain "" takes the first chain carrying it), as the
// golang filter's Config holds it (envoy.extensions.filters.http.golang.v3alpha.Config:
// library_id 1, library_path 2, plugin_name 3, plugin_config 4). The test
// hosts load exactly this, so they run what istiod pushed.
func PluginConfig(chains []cluster.HTTPChain, chain string) (*anypb.Any, error) {
	for _, ch := range chains {
		if chain != "" && ch.ChainName != chain {
			continue
		}
		for _, fc := range ch.Configs {
			if fc.Name != pluginconfig.PluginHTTP {
				continue
			}
			b := fc.Value
			for len(b) > 0 {
				num, typ, n := protowire.ConsumeTag(b)
				if n < 0 {
					return nil, protowire.ParseError(n)
				}
				b = b[n:]
				if num == 4 && typ == protowire.BytesType {
					v, _ := protowire.ConsumeBytes(b)
					a := &anypb.Any{}
					return a, proto.Unmarshal(v, a)
				}
				n = protowire.ConsumeFieldValue(num, typ, b)
				if n < 0 {
					return nil, protowire.ParseError(n)
				}
				b = b[n:]
			}
		}
	}
	return nil, fmt.Errorf("%w in chain %q", ErrNoPlugin, chain)
}

// ErrNoPlugin: the chains served carry no leanmesh HTTP filter (Istio mode,
// or a proxy the policy does not select).
var ErrNoPlugin = fmt.Errorf("no %s filter config", pluginconfig.PluginHTTP)
