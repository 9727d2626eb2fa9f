package httpstats

import (
	"strconv"
	"strings"
	"time"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"

	"github.com/leanmesh/leanmesh/filters/peer"
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
	requestMX   bool // inbound: the request carried MX headers, so echo ours
	reqFrames   grpcFrames
	respFrames  grpcFrames
}

func (f *filter) worker() *workerState {
	return &f.cfg.workers[f.cb.StreamInfo().WorkerID()%numWorkers]
}

func (f *filter) DecodeHeaders(h api.RequestHeaderMap, endStream bool) (status api.StatusType) {
	defer func() {
		if r := recover(); r != nil {
			countPanic("DecodeHeaders", r)
			status = api.Continue
		}
	}()
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
			f.requestMX = true
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
	p := w.peerDims(f.cfg.registry, wl, f.cfg.c.MetadataExchange.PeerCacheSize)
	w.mu.Unlock()
	return p
}

func (f *filter) DecodeData(b api.BufferInstance, endStream bool) (status api.StatusType) {
	defer func() {
		if r := recover(); r != nil {
			countPanic("DecodeData", r)
			status = api.Continue
		}
	}()
	if f.isGRPC && f.cfg.c.GRPCMessageCounts {
		f.reqFrames.feed(b.Bytes())
	}
	return api.Continue
}

func (f *filter) EncodeHeaders(h api.ResponseHeaderMap, endStream bool) (status api.StatusType) {
	defer func() {
		if r := recover(); r != nil {
			countPanic("EncodeHeaders", r)
			status = api.Continue
		}
	}()
	mode := f.cfg.c.MetadataExchange.Mode
	if mode == pluginconfig.MXOff {
		return api.Continue
	}
	switch f.cfg.c.Direction {
	case pluginconfig.Inbound:
		if mode == pluginconfig.MXExchange && f.requestMX && f.local != nil && f.local.mx != nil {
			Headers.Set(h, HeaderMX, f.local.mx.HeaderValue)
			Headers.Set(h, HeaderMXID, f.local.mx.ID)
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
	defer func() {
		if r := recover(); r != nil {
			countPanic("EncodeData", r)
			status = api.Continue
		}
	}()
	if f.isGRPC && f.cfg.c.GRPCMessageCounts {
		f.respFrames.feed(b.Bytes())
	}
	return api.Continue
}

// OnLog records the request at access-log time, as Istio's stats filter does.
func (f *filter) OnLog(reqHdr api.RequestHeaderMap, _ api.RequestTrailerMap, respHdr api.ResponseHeaderMap, respTrailer api.ResponseTrailerMap) {
	defer func() {
		if r := recover(); r != nil {
			countPanic("OnLog", r)
		}
	}()
	f.record(reqHdr, respHdr, respTrailer)
}

func (f *filter) record(reqHdr api.RequestHeaderMap, respHdr api.ResponseHeaderMap, respTrailer api.ResponseTrailerMap) {
	info := f.cb.StreamInfo()
	workerID := info.WorkerID()
	w := &f.cfg.workers[workerID%numWorkers]
	c := f.cfg.c
	if f.local == nil {
		f.local = f.cfg.localIdentity(f.cb)
	}
	k := telemetry.Key{Reporter: c.Reporter, Local: f.local.peer, Peer: f.peer, ResponseFlags: "-"}
	if f.isGRPC {
		k.Protocol = telemetry.ProtocolGRPC
		k.GRPCStatus = grpcStatus(respTrailer, respHdr)
	}
	if code, ok := info.ResponseCode(); ok {
		k.ResponseCode = uint16(code)
	}

	// Each StreamInfo/property read is a C call: read only what the label
	// rules need. The outbound decode path already resolved the cluster.
	clusterName := f.clusterName
	if clusterName == "" {
		clusterName, _ = info.UpstreamClusterName()
	}
	routeName := ""
	if clusterName == "" {
		// block_all has a direct response and no cluster.
		routeName = info.GetRouteName()
	}
	ci := f.cluster
	w.mu.Lock()
	if ci == nil && clusterName != "" && !isSpecialCluster(clusterName) {
		ci = w.cluster(f.cb, clusterName)
	}
	if raw, err := f.cb.GetProperty("response.flags"); err == nil {
		if mask, err := strconv.ParseUint(raw, 10, 64); err == nil {
			k.ResponseFlags = w.flags.shortFlags(mask)
		}
	}
	w.mu.Unlock()
	var meta *telemetry.Service
	if ci != nil {
		meta = ci.service
	}
	host := ""
	if !c.DisableHostHeaderFallback && reqHdr != nil && (meta == nil || meta.Host == "" || isSpecialCluster(clusterName)) {
		// Cluster metadata's host wins over the Host header: read it only
		// when it can matter.
		host = reqHdr.GetRaw(":authority")
	}
	k.Service = telemetry.ResolveService(host, c.DisableHostHeaderFallback, routeName, clusterName, meta)

	if c.Reporter == telemetry.ReporterDestination {
		k.PeerPrincipal, _ = f.cb.GetProperty("connection.uri_san_peer_certificate")
		k.LocalPrincipal, _ = f.cb.GetProperty("connection.uri_san_local_certificate")
	} else {
		k.PeerPrincipal, _ = f.cb.GetProperty("upstream.uri_san_peer_certificate")
		k.LocalPrincipal, _ = f.cb.GetProperty("upstream.uri_san_local_certificate")
		if k.Peer == nil {
			k.Peer = f.endpointPeer(w)
		}
	}
	if len(c.Dimensions) > 0 {
		k.Extra = f.dimensions(reqHdr)
	}

	var obs telemetry.HTTPObservation
	if d, err := f.cb.GetProperty("request.duration"); err == nil {
		if dur, err := time.ParseDuration(d); err == nil {
			obs.DurationMs, obs.HasDuration = uint64(dur/time.Millisecond), true
		}
	}
	// Envoy's Go API has no downstream wire-byte meter; total_size (headers
	// plus body, as Envoy's attributes define it) is the closest measure.
	rq, err1 := f.cb.GetProperty("request.total_size")
	rs, err2 := f.cb.GetProperty("response.total_size")
	if err1 == nil && err2 == nil {
		a, e1 := strconv.ParseUint(rq, 10, 64)
		b, e2 := strconv.ParseUint(rs, 10, 64)
		if e1 == nil && e2 == nil {
			obs.RequestBytes, obs.ResponseBytes, obs.HasBytes = a, b, true
		}
	}
	obs.RequestMessages, obs.ResponseMessages = f.reqFrames.count, f.respFrames.count
	f.cfg.registry.RecordHTTP(workerID, &k, &obs)
}

// endpointPeer is the client-side fallback when the server sent no MX:
// the upstream host's filter_metadata.istio.workload.
func (f *filter) endpointPeer(w *workerState) *telemetry.Peer {
	raw, err := f.cb.GetProperty("xds.upstream_host_metadata")
	if err != nil || raw == "" {
		return nil
	}
	s := workloadFromHostMetadata([]byte(raw))
	if s == "" {
		return nil
	}
	wl, ok := peer.ParseWorkloadMetadata(s)
	if !ok {
		return nil
	}
	return f.cfg.registry.InternPeer(telemetry.Peer{
		Workload: wl.Name, Namespace: wl.Namespace, CanonicalService: wl.CanonicalService,
		CanonicalRevision: wl.CanonicalRevision, Cluster: wl.Cluster,
	})
}

// dimensions evaluates the configured custom dimension expressions.
func (f *filter) dimensions(reqHdr api.RequestHeaderMap) string {
	vals := make([]string, len(f.cfg.c.Dimensions))
	for i, a := range f.cfg.c.Dimensions {
		switch a.Kind {
		case pluginconfig.Constant:
			vals[i] = a.Value
		case pluginconfig.RequestHeader:
			if reqHdr != nil {
				vals[i] = reqHdr.GetRaw(a.Value)
			}
		case pluginconfig.Property:
			vals[i], _ = f.cb.GetProperty(a.Value)
		}
	}
	return telemetry.JoinExtra(vals)
}

// grpcStatus reads grpc-status from trailers, or from headers for a
// trailers-only response, as Envoy's Grpc::Common::getGrpcStatus. Trailers
// are read with Get: the SDK's GetRaw on a trailer map reads the header map
// of the same phase (Filter::getHeader uses state.headers), so it would miss.
func grpcStatus(tr api.ResponseTrailerMap, h api.ResponseHeaderMap) string {
	if tr != nil {
		if s, ok := tr.Get("grpc-status"); ok && s != "" {
			return s
		}
	}
	if h != nil {
		return h.GetRaw("grpc-status")
	}
	return ""
}

// grpcFrames counts gRPC length-prefixed messages across data chunks: Envoy's
// grpc_stats filter state is not readable from a Go filter, so the filter
// parses the 5-byte frame headers itself (only for gRPC streams).
type grpcFrames struct {
	count   uint64
	skip    uint64 // payload bytes left in the current message
	hdr     [5]byte
	hdrFill int
}

func (g *grpcFrames) feed(b []byte) {
	for len(b) > 0 {
		if g.skip > 0 {
			n := uint64(len(b))
			if n > g.skip {
				n = g.skip
			}
			g.skip -= n
			b = b[n:]
			continue
		}
		n := copy(g.hdr[g.hdrFill:], b)
		g.hdrFill += n
		b = b[n:]
		if g.hdrFill == 5 {
			g.count++
			g.skip = uint64(g.hdr[1])<<24 | uint64(g.hdr[2])<<16 | uint64(g.hdr[3])<<8 | uint64(g.hdr[4])
			g.hdrFill = 0
		}
	}
}

// scrapeFilter answers scrape requests with the process-wide exposition. It
// sits alone on a listener the controller adds (see docs/exposition.md).
type scrapeFilter struct {
	api.PassThroughStreamFilter
	cfg *Config
	cb  api.FilterCallbackHandler
}

func (s *scrapeFilter) DecodeHeaders(h api.RequestHeaderMap, endStream bool) (status api.StatusType) {
	defer func() {
		if r := recover(); r != nil {
			countPanic("ScrapeDecodeHeaders", r)
			s.cb.DecoderFilterCallbacks().SendLocalReply(500, "leanmesh: exposition failed\n", nil, 0, "leanmesh_exposition_panic")
			status = api.LocalReply
		}
	}()
	path := h.Path()
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if path != s.cfg.c.Exposition.Path {
		s.cb.DecoderFilterCallbacks().SendLocalReply(404, "not found; metrics are at "+s.cfg.c.Exposition.Path+"\n", nil, 0, "leanmesh_not_found")
		return api.LocalReply
	}
	body := telemetry.AppendShared(nil)
	s.cb.DecoderFilterCallbacks().SendLocalReply(200, string(body),
		map[string][]string{"content-type": {telemetry.ContentType}}, 0, "leanmesh_exposition")
	return api.LocalReply
}
