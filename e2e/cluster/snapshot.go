package cluster

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
)

// typeHCM is the network filter whose HTTP filter chain we decode.
const typeHCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

// Resource is one xDS resource as received. Msg is the decoded top-level
// proto (Cluster, Listener, RouteConfiguration, ClusterLoadAssignment);
// nested Any fields (filter typed_config) stay undecoded, so no extension
// types need registering. Raw allows substring checks on anything else.
type Resource struct {
	Name      string
	Raw       []byte
	Msg       proto.Message
	DecodeErr error
}

// Contains reports whether the serialized resource contains s (works for
// strings inside undecoded typed_config Anys too).
func (r Resource) Contains(s string) bool { return bytes.Contains(r.Raw, []byte(s)) }

// TypeSnapshot is the latest SotW response for one type.
type TypeSnapshot struct {
	TypeURL   string
	Version   string
	Nonce     string
	Resources map[string]Resource
	Bytes     int // total serialized size of the resources
	Pushes    int // responses received for this type so far
	Received  time.Time
}

// Names returns the sorted resource names.
func (t TypeSnapshot) Names() []string {
	names := make([]string, 0, len(t.Resources))
	for n := range t.Resources {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func decodeResponse(resp *discoveryv3.DiscoveryResponse) *TypeSnapshot {
	ts := &TypeSnapshot{
		TypeURL: resp.TypeUrl, Version: resp.VersionInfo, Nonce: resp.Nonce,
		Resources: make(map[string]Resource, len(resp.Resources)), Received: time.Now(),
	}
	for i, a := range resp.Resources {
		r := Resource{Raw: a.GetValue()}
		ts.Bytes += len(r.Raw)
		var msg interface {
			proto.Message
			GetName() string
		}
		switch a.GetTypeUrl() {
		case TypeCluster:
			msg = &clusterv3.Cluster{}
		case TypeListener:
			msg = &listenerv3.Listener{}
		case TypeRoute:
			msg = &routev3.RouteConfiguration{}
		case TypeEndpoint:
			m := &endpointv3.ClusterLoadAssignment{}
			if err := proto.Unmarshal(r.Raw, m); err != nil {
				r.DecodeErr = err
			}
			r.Msg, r.Name = m, m.GetClusterName()
		}
		if msg != nil {
			if err := proto.Unmarshal(r.Raw, msg); err != nil {
				r.DecodeErr = err
			}
			r.Msg, r.Name = msg, msg.GetName()
		}
		if r.Name == "" {
			r.Name = fmt.Sprintf("#%d", i)
		}
		ts.Resources[r.Name] = r
	}
	return ts
}

// edsNames are the EDS service names of EDS-typed clusters (what Envoy
// subscribes to after CDS).
func (t *TypeSnapshot) edsNames() []string {
	var names []string
	for _, r := range t.Resources {
		c, ok := r.Msg.(*clusterv3.Cluster)
		if !ok || c.GetType() != clusterv3.Cluster_EDS {
			continue
		}
		n := c.GetEdsClusterConfig().GetServiceName()
		if n == "" {
			n = c.GetName()
		}
		names = append(names, n)
	}
	return names
}

// rdsNames are the route configs referenced by listeners' HCMs.
func (t *TypeSnapshot) rdsNames() []string {
	var names []string
	for _, r := range t.Resources {
		l, ok := r.Msg.(*listenerv3.Listener)
		if !ok {
			continue
		}
		for _, ch := range HTTPFilterChains(l) {
			if ch.RouteConfig != "" {
				names = append(names, ch.RouteConfig)
			}
		}
	}
	return names
}

// Snapshot is the observer's state at one point in time, keyed by type URL.
type Snapshot struct {
	Types map[string]TypeSnapshot
	Err   error // set once the stream ended
}

// Names returns the sorted resource names of typ.
func (s Snapshot) Names(typ string) []string { return s.Types[typ].Names() }

// Has reports whether typ has a resource called name.
func (s Snapshot) Has(typ, name string) bool {
	_, ok := s.Types[typ].Resources[name]
	return ok
}

// Pushes is how many responses of typ were received.
func (s Snapshot) Pushes(typ string) int { return s.Types[typ].Pushes }

// Cluster returns a decoded cluster by name, or nil.
func (s Snapshot) Cluster(name string) *clusterv3.Cluster {
	c, _ := s.Types[TypeCluster].Resources[name].Msg.(*clusterv3.Cluster)
	return c
}

// Listener returns a decoded listener by name, or nil.
func (s Snapshot) Listener(name string) *listenerv3.Listener {
	l, _ := s.Types[TypeListener].Resources[name].Msg.(*listenerv3.Listener)
	return l
}

// Summary is a one-line description for error messages.
func (s Snapshot) Summary() string {
	var parts []string
	for _, typ := range []string{TypeCluster, TypeListener, TypeRoute, TypeEndpoint} {
		t, ok := s.Types[typ]
		if !ok {
			continue
		}
		short := typ[strings.LastIndexByte(typ, '.')+1:]
		names := t.Names()
		if len(names) > 12 {
			names = append(names[:12], "…")
		}
		parts = append(parts, fmt.Sprintf("%s: %d (%d B, %d pushes) %v", short, len(t.Resources), t.Bytes, t.Pushes, names))
	}
	if s.Err != nil {
		parts = append(parts, "error: "+s.Err.Error())
	}
	if len(parts) == 0 {
		return "nothing received"
	}
	return strings.Join(parts, "; ")
}

// HTTPChain is one filter chain of a listener that runs an
// HttpConnectionManager.
type HTTPChain struct {
	ChainName   string
	RouteConfig string   // RDS name, if routes come from RDS
	HTTPFilters []string // names in order, router last
	// Configs holds each HTTP filter's typed_config (type URL + bytes), to
	// check filter settings without registering extension types.
	Configs []FilterConfig
}

// FilterConfig is an undecoded HTTP filter typed_config.
type FilterConfig struct {
	Name    string
	TypeURL string
	Value   []byte
}

// HTTPFilterChains decodes the HCMs of every filter chain (including the
// default chain) of l.
func HTTPFilterChains(l *listenerv3.Listener) []HTTPChain {
	var out []HTTPChain
	chains := append([]*listenerv3.FilterChain(nil), l.GetFilterChains()...)
	if l.GetDefaultFilterChain() != nil {
		chains = append(chains, l.GetDefaultFilterChain())
	}
	for _, fc := range chains {
		for _, f := range fc.GetFilters() {
			tc := f.GetTypedConfig()
			if tc.GetTypeUrl() != typeHCM {
				continue
			}
			hcm := &hcmv3.HttpConnectionManager{}
			if err := proto.Unmarshal(tc.GetValue(), hcm); err != nil {
				continue
			}
			ch := HTTPChain{ChainName: fc.GetName(), RouteConfig: hcm.GetRds().GetRouteConfigName()}
			for _, hf := range hcm.GetHttpFilters() {
				ch.HTTPFilters = append(ch.HTTPFilters, hf.GetName())
				ch.Configs = append(ch.Configs, FilterConfig{
					Name: hf.GetName(), TypeURL: hf.GetTypedConfig().GetTypeUrl(), Value: hf.GetTypedConfig().GetValue(),
				})
			}
			out = append(out, ch)
		}
	}
	return out
}

// HTTPFilterChains returns the HCM chains of the named listener (e.g.
// "virtualInbound"), or nil if absent.
func (s Snapshot) HTTPFilterChains(listener string) []HTTPChain {
	l := s.Listener(listener)
	if l == nil {
		return nil
	}
	return HTTPFilterChains(l)
}
