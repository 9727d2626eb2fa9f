package httpstats

import (
	"strings"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"

	"github.com/leanmesh/leanmesh/filters/panicsafe"
	"github.com/leanmesh/leanmesh/filters/pluginconfig"
	"github.com/leanmesh/leanmesh/filters/telemetry"
)

// Metadata-exchange headers, as Istio's peer_metadata filter names them.
const (
	HeaderMX   = "x-envoy-peer-metadata"
	HeaderMXID = "x-envoy-peer-metadata-id"
)

// Factory implements api.StreamFilterFactory.
func Factory(config interface{}, cb api.FilterCallbackHandler) api.StreamFilter {
	cfg, ok := config.(*Config)
	if !ok || cfg == nil {
		return &api.PassThroughStreamFilter{}
	}
	if cfg.c.Exposition.Enabled {
		return &scrapeFilter{cfg: cfg, cb: cb}
	}
	return &filter{cfg: cfg, cb: cb}
}

// filter is one HTTP stream. Nothing here blocks, spawns goroutines or
// copies header maps: single headers are read with GetRaw.
type filter struct {
	api.PassThroughStreamFilter
	cfg *Config
	cb  api.FilterCallbackHandler

	local       *localState
	peer        *telemetry.Peer // learned from MX headers
	cluster     *clusterInfo    // outbound: the route's cluster, seen at decode time
	clusterName string
	isGRPC      bool
	// inbound: which MX headers the request carried; ours are echoed header
	// by header, as Istio's MXPropagationMethod::inject does downstream.
	requestMXID, requestMXValue bool
	reqFrames                   grpcFrames
	respFrames                  grpcFrames
	// Body bytes seen in the data callbacks, and whether DecodeHeaders ran:
	// with the header sizes OnLog gets, they make request.total_size and
	// response.total_size without two property reads (see totalSizes).
	sawHeaders        bool
	reqBody, respBody uint64
}

func (f *filter) worker() *workerState {
	return &f.cfg.workers[f.cb.StreamInfo().WorkerID()%numWorkers]
}

func (f *filter) DecodeHeaders(h api.RequestHeaderMap, endStream bool) (status api.StatusType) {
	defer panicsafe.Recover("DecodeHeaders", &status, api.Continue, nil)
	f.sawHeaders = true
	f.local = f.cfg.localIdentity(f.cb)
	f.isGRPC = strings.HasPrefix(h.GetRaw("content-type"), "application/grpc")
	mode := f.cfg.c.MetadataExchange.Mode
	if mode == pluginconfig.MXOff {
		return api.Continue
	}
	switch f.cfg.c.Direction {
	case pluginconfig.Inbound:
		id, value := h.GetRaw(HeaderMXID), h.GetRaw(HeaderMX)
		if value != "" || id != "" {
			f.requestMXID, f.requestMXValue = id != "", value != ""
			f.peer = f.lookupPeer(id, value)
			if mode == pluginconfig.MXExchange {
				// The app never sees the exchange.
				Headers.Del(h, HeaderMX)
				Headers.Del(h, HeaderMXID)
			}
		}
	default: // outbound and gateway: the client side toward the mesh
		if mode == pluginconfig.MXObserve {
			break
		}
		if f.sendMX() && f.local.mx != nil {
			Headers.Set(h, HeaderMX, f.local.mx.HeaderValue)
			Headers.Set(h, HeaderMXID, f.local.mx.ID)
		} else if h.GetRaw(HeaderMX) != "" || h.GetRaw(HeaderMXID) != "" {
			// Never forward an app's (or an external client's) MX headers
			// toward a non-mesh destination.
			Headers.Del(h, HeaderMX)
			Headers.Del(h, HeaderMXID)
		}
	}
	return api.Continue
}

// sendMX decides whether the upstream gets our identity. The route (and
// with it the upstream cluster) is resolved by the connection manager before
// decoder filters run, so the cluster is known here.
func (f *filter) sendMX() bool {
	name, ok := f.cb.StreamInfo().UpstreamClusterName()
	f.clusterName = name
	if !ok || name == "" || isSpecialCluster(name) {
		return false
	}
	w := f.worker()
	w.mu.Lock()
	ci := w.cluster(f.cb, name)
	w.mu.Unlock()
	f.cluster = ci
	if f.cfg.c.MetadataExchange.SendTo == pluginconfig.SendAll {
		return !ci.disableMX
	}
	return ci.inMesh
}

func (f *filter) lookupPeer(id, value string) *telemetry.Peer {
	if value == "" {
		return nil
	}
	w := f.worker()
	wl, _, err := w.peers.Lookup(id, value)
	if err != nil {
		countOnce("peer_metadata_invalid", err)
		return nil
	}
	w.mu.Lock()
	p := w.peerDims(f.cfg.registry, wl, f.cfg.c.MetadataExchange.PeerCacheSize, !f.cfg.c.MetadataExchange.CertificatePrincipalsOnly)
	w.mu.Unlock()
	return p
}

func (f *filter) DecodeData(b api.BufferInstance, endStream bool) (status api.StatusType) {
	defer panicsafe.Recover("DecodeData", &status, api.Continue, nil)
	f.reqBody += uint64(b.Len()) // the SDK's Len is not a C call
	if f.isGRPC && f.cfg.c.GRPCMessageCounts {
		f.reqFrames.feed(b.Bytes())
	}
	return api.Continue
}

func (f *filter) EncodeHeaders(h api.ResponseHeaderMap, endStream bool) (status api.StatusType) {
	defer panicsafe.Recover("EncodeHeaders", &status, api.Continue, nil)
	mode := f.cfg.c.MetadataExchange.Mode
	if mode == pluginconfig.MXOff {
		return api.Continue
	}
	switch f.cfg.c.Direction {
	case pluginconfig.Inbound:
		if mode == pluginconfig.MXExchange && f.local != nil && f.local.mx != nil {
			if f.requestMXValue {
				Headers.Set(h, HeaderMX, f.local.mx.HeaderValue)
			}
			if f.requestMXID {
				Headers.Set(h, HeaderMXID, f.local.mx.ID)
			}
		}
	default:
		id, value := h.GetRaw(HeaderMXID), h.GetRaw(HeaderMX)
		if value != "" || id != "" {
			f.peer = f.lookupPeer(id, value)
			if mode == pluginconfig.MXExchange {
				// Strip before the app (or, on a gateway, the external client) sees it.
				Headers.Del(h, HeaderMX)
				Headers.Del(h, HeaderMXID)
			}
		}
	}
	return api.Continue
}

func (f *filter) EncodeData(b api.BufferInstance, endStream bool) (status api.StatusType) {
	defer panicsafe.Recover("EncodeData", &status, api.Continue, nil)
	f.respBody += uint64(b.Len())
	if f.isGRPC && f.cfg.c.GRPCMessageCounts {
		f.respFrames.feed(b.Bytes())
	}
	return api.Continue
}

// OnLog records the request at access-log time, as Istio's stats filter does.
func (f *filter) OnLog(reqHdr api.RequestHeaderMap, _ api.RequestTrailerMap, respHdr api.ResponseHeaderMap, respTrailer api.ResponseTrailerMap) {
	defer panicsafe.Recover[api.StatusType]("OnLog", nil, 0, nil)
	f.record(reqHdr, respHdr, respTrailer)
}
