package httpstats

import (
	"strconv"
	"sync"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"

	"github.com/leanmesh/leanmesh/filters/panicsafe"
	"github.com/leanmesh/leanmesh/filters/peer"
	"github.com/leanmesh/leanmesh/filters/pluginconfig"
	"github.com/leanmesh/leanmesh/filters/telemetry"
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
	f := filterPool.Get().(*filter)
	f.cfg, f.cb = cfg, cb
	return f
}

// filterPool recycles stream filters: the SDK's factory contract wants a
// StreamFilter per stream, which would be leanmesh's only allocation of a
// steady-state request (TestAllocationsAttributed).
var filterPool = sync.Pool{New: func() any { return new(filter) }}

// OnDestroy hands the filter back to the pool. The SDK calls nothing on it
// afterwards: envoyGoFilterOnHttpDestroy drops its reference
// (req.httpFilter = nil) and the request right after this returns, and a
// later callback for the stream would find no request and make a new one
// (shim.go); leanmesh starts no goroutine that could still hold it.
func (f *filter) OnDestroy(api.DestroyReason) {
	defer panicsafe.Recover[api.StatusType]("OnDestroy", nil, 0, nil)
	*f = filter{}
	filterPool.Put(f)
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
	// outbound: the :status of the response headers leanmesh encoded (see
	// EncodeHeaders), when it read them anyway.
	respCode    uint32
	hasRespCode bool
}

func (f *filter) worker() *workerState {
	return &f.cfg.workers[f.cb.StreamInfo().WorkerID()%numWorkers]
}

func (f *filter) DecodeHeaders(h api.RequestHeaderMap, endStream bool) (status api.StatusType) {
	defer panicsafe.Recover("DecodeHeaders", &status, api.Continue, nil)
	f.sawHeaders = true
	f.local = f.cfg.localIdentity(f.cb)
	// One copy of the request headers answers every read below (before the
	// filter changes the map, as Reads.Headers requires).
	hs := readHeaders(h)
	f.isGRPC = isGRPCRequest(&hs)
	mode := f.cfg.c.MetadataExchange.Mode
	if mode == pluginconfig.MXOff {
		return api.Continue
	}
	switch f.cfg.c.Direction {
	case pluginconfig.Inbound:
		id, value := hs.get(peer.HeaderMetadataID), hs.get(peer.HeaderMetadata)
		if value != "" || id != "" {
			f.requestMXID, f.requestMXValue = id != "", value != ""
			f.peer = f.lookupPeer(id, value)
			if mode == pluginconfig.MXExchange {
				// The app never sees the exchange.
				Headers.Del(h, peer.HeaderMetadata)
				Headers.Del(h, peer.HeaderMetadataID)
			}
		}
	default: // outbound and gateway: the client side toward the mesh
		if mode == pluginconfig.MXObserve {
			break
		}
		if f.sendMX() && f.local.mx != nil {
			Headers.Set(h, peer.HeaderMetadata, f.local.mx.HeaderValue)
			Headers.Set(h, peer.HeaderMetadataID, f.local.mx.ID)
		} else if hs.get(peer.HeaderMetadata) != "" || hs.get(peer.HeaderMetadataID) != "" {
			// Never forward an app's (or an external client's) MX headers
			// toward a non-mesh destination.
			Headers.Del(h, peer.HeaderMetadata)
			Headers.Del(h, peer.HeaderMetadataID)
		}
	}
	return api.Continue
}

// sendMX decides whether the upstream gets our identity. The route (and
// with it the upstream cluster) is resolved by the connection manager before
// decoder filters run, so the cluster is known here.
func (f *filter) sendMX() bool {
	name, ci := f.upstreamCluster(f.worker())
	f.clusterName, f.cluster = name, ci
	if f.cfg.c.MetadataExchange.SendTo == pluginconfig.SendAll {
		// Istio's default (peer_metadata's MXPropagationMethod with
		// skip_external_clusters off, filter.cc skipMXHeaders): every
		// upstream cluster, PassthroughCluster and MESH_EXTERNAL services
		// (istio.external) included; only istio.disable_mx stops it.
		return name != "" && (ci == nil || !ci.disableMX)
	}
	return ci != nil && ci.inMesh // nil: no cluster, or a special one: never in mesh
}

// upstreamCluster returns the stream's upstream cluster name, owned, and the
// worker's cached view of its metadata (nil for none or a special cluster).
func (f *filter) upstreamCluster(w *workerState) (string, *clusterInfo) {
	name, ok := Reads.ClusterName(f.cb) // borrowed: resolved to an owned name below
	if !ok || name == "" {
		return "", nil
	}
	if s, special := specialCluster(name); special {
		return s, nil
	}
	w.mu.Lock()
	ci := w.cluster(f.cb, name)
	w.mu.Unlock()
	return ci.name, ci
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
		f.reqFrames.feed(Reads.Bytes(b))
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
				Headers.Set(h, peer.HeaderMetadata, f.local.mx.HeaderValue)
			}
			if f.requestMXID {
				Headers.Set(h, peer.HeaderMetadataID, f.local.mx.ID)
			}
		}
	default:
		hs := readHeaders(h)
		// In exchange mode (LeanMesh) leanmesh is the first HTTP filter
		// (INSERT_FIRST, controller/render), so the last encoder: the headers
		// it sees are those the connection manager then encodes and takes
		// the response code from (ActiveStream::encodeHeaders -> chargeStats
		// -> StreamInfo::setResponseCode), and :status is StreamInfo's code
		// without a read at log time. Only from a copy that was made anyway;
		// observe mode (Shadow) sits before the router and reads StreamInfo.
		if hs.copied && mode == pluginconfig.MXExchange {
			if v, ok := headerValue(hs.kv, ":status"); ok {
				if c, err := strconv.ParseUint(v, 10, 32); err == nil && c >= 100 && c <= 999 {
					f.respCode, f.hasRespCode = uint32(c), true
				}
			}
		}
		id, value := hs.get(peer.HeaderMetadataID), hs.get(peer.HeaderMetadata)
		if value != "" || id != "" {
			f.peer = f.lookupPeer(id, value)
			if mode == pluginconfig.MXExchange {
				// Strip before the app (or, on a gateway, the external client) sees it.
				Headers.Del(h, peer.HeaderMetadata)
				Headers.Del(h, peer.HeaderMetadataID)
			}
		}
	}
	return api.Continue
}

func (f *filter) EncodeData(b api.BufferInstance, endStream bool) (status api.StatusType) {
	defer panicsafe.Recover("EncodeData", &status, api.Continue, nil)
	f.respBody += uint64(b.Len())
	if f.isGRPC && f.cfg.c.GRPCMessageCounts {
		f.respFrames.feed(Reads.Bytes(b))
	}
	return api.Continue
}

// OnLog records the request at access-log time, as Istio's stats filter does.
func (f *filter) OnLog(reqHdr api.RequestHeaderMap, _ api.RequestTrailerMap, respHdr api.ResponseHeaderMap, respTrailer api.ResponseTrailerMap) {
	defer panicsafe.Recover[api.StatusType]("OnLog", nil, 0, nil)
	f.record(reqHdr, respHdr, respTrailer)
}
