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

func (f *filter) record(reqHdr api.RequestHeaderMap, respHdr api.ResponseHeaderMap, respTrailer api.ResponseTrailerMap) {
	info := f.cb.StreamInfo()
	workerID := info.WorkerID()
	w := &f.cfg.workers[workerID%numWorkers]
	c := f.cfg.c
	if f.local == nil {
		f.local = f.cfg.localIdentity(f.cb)
	}
	k := telemetry.Key{Reporter: c.Reporter, Local: f.local.peer, Peer: f.peer, ResponseFlags: "-"}
	code, hasCode := f.respCode, f.hasRespCode // outbound: from the encoded :status
	if !hasCode {
		code, hasCode = Reads.ResponseCode(f.cb)
	}
	if hasCode {
		k.ResponseCode = uint16(code)
	}
	if f.isGRPC {
		k.Protocol = telemetry.ProtocolGRPC
		k.GRPCStatus = grpcStatus(respTrailer, respHdr, code, hasCode)
	}

	// Each StreamInfo/property read is a C call: read only what the label
	// rules need. The outbound decode path already resolved the cluster.
	// Reads' strings are borrowed until the next string read on the request
	// (see Reader): each is used up before the next, and the principals,
	// which go into the key, are read last.
	clusterName, ci := f.clusterName, f.cluster
	if clusterName == "" {
		clusterName, ci = f.upstreamCluster(w)
	}
	routeName := ""
	if clusterName == "" {
		// block_all has a direct response and no cluster.
		routeName = info.GetRouteName()
	}
	if raw, err := Reads.Property(f.cb, "response.flags"); err == nil {
		if mask, err := strconv.ParseUint(raw, 10, 64); err == nil {
			w.mu.Lock()
			k.ResponseFlags = w.flags.shortFlags(mask)
			w.mu.Unlock()
		}
	}
	var meta *telemetry.Service
	if ci != nil {
		meta = ci.service
	}
	host := ""
	if !c.DisableHostHeaderFallback && reqHdr != nil && (meta == nil || meta.Host == "" || isSpecialCluster(clusterName)) {
		// Cluster metadata's host wins over the Host header: read it only
		// when it can matter.
		host = Reads.Header(reqHdr, ":authority")
	}
	k.Service = telemetry.ResolveService(host, c.DisableHostHeaderFallback, routeName, clusterName, meta)
	if c.Reporter != telemetry.ReporterDestination && k.Peer == nil {
		k.Peer = f.endpointPeer(w)
	}
	if len(c.Dimensions) > 0 {
		k.Extra = f.dimensions(reqHdr)
	}

	var obs telemetry.HTTPObservation
	if d, err := Reads.Property(f.cb, "request.duration"); err == nil {
		if dur, err := time.ParseDuration(d); err == nil {
			obs.DurationMs, obs.HasDuration = uint64(dur/time.Millisecond), true
		}
	}
	obs.RequestBytes, obs.ResponseBytes, obs.HasBytes = f.totalSizes(reqHdr, respHdr, respTrailer)
	obs.RequestMessages, obs.ResponseMessages = f.reqFrames.count, f.respFrames.count

	if c.Reporter == telemetry.ReporterDestination {
		k.PeerPrincipal, k.LocalPrincipal = f.principals(w, ci, "connection.uri_san_peer_certificate", "connection.uri_san_local_certificate")
	} else {
		k.PeerPrincipal, k.LocalPrincipal = f.principals(w, ci, "upstream.uri_san_peer_certificate", "upstream.uri_san_local_certificate")
	}
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
			if v, ok := nodeProperty(f.local.node, a.Value); ok {
				vals[i] = v
				continue
			}
			vals[i], _ = f.cb.GetProperty(a.Value) // the SDK's copy: several are kept
		}
	}
	return telemetry.JoinExtra(vals)
}

// totalSizes returns request.total_size and response.total_size as Envoy's
// attributes define them (extensions/filters/common/expr/context.cc):
// bytesReceived + request headers' byteSize, and bytesSent + response
// headers' + trailers' byteSize; the Go API has no downstream wire-byte
// meter, and these are the closest measure. Envoy's golang filter hands
// OnLog the byteSize of exactly those maps (Filter::log), and the body bytes
// are counted in the data callbacks, so no property read is needed. The
// body bytes are those that pass leanmesh's position in the chain: they
// equal bytesReceived/bytesSent unless a filter between leanmesh and the
// downstream rewrites a body. When leanmesh saw no headers (a local reply
// from an earlier filter) or the header sizes are not readable (another SDK
// layout), it reads the two properties instead.
func (f *filter) totalSizes(reqHdr api.RequestHeaderMap, respHdr api.ResponseHeaderMap, respTrailer api.ResponseTrailerMap) (rq, rs uint64, ok bool) {
	if f.sawHeaders {
		hq, ok1 := headerBytes(reqHdr)
		hs, ok2 := headerBytes(respHdr)
		ht, ok3 := headerBytes(respTrailer)
		if ok1 && ok2 && ok3 {
			return f.reqBody + hq, f.respBody + hs + ht, true
		}
	}
	a, err1 := f.cb.GetProperty("request.total_size")
	b, err2 := f.cb.GetProperty("response.total_size")
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	rq, e1 := strconv.ParseUint(a, 10, 64)
	rs, e2 := strconv.ParseUint(b, 10, 64)
	return rq, rs, e1 == nil && e2 == nil
}

// headerBytes is a map's byteSize as the SDK received it; a nil map is 0
// (Envoy adds nothing for a missing map).
func headerBytes(h api.HeaderMap) (uint64, bool) {
	if h == nil {
		return 0, true
	}
	return Headers.ByteSize(h)
}

// principals returns the peer's and the local certificate's URI SANs. With a
// peer SAN present the connection is TLS with the certificate the cluster's
// (outbound) or the inbound port's transport socket holds, the same for every
// request on that cluster: the local SAN is read once per cluster and worker,
// with the cluster metadata's lifetime (docs/cluster-metadata.md). Without a
// peer SAN, or without a cluster, it is read per request. The peer SAN is
// borrowed (Reader) and copied only when a local SAN read follows it.
func (f *filter) principals(w *workerState, ci *clusterInfo, peerProp, localProp string) (peerSAN, localSAN string) {
	peerSAN, _ = Reads.Property(f.cb, peerProp)
	if peerSAN != "" && ci != nil {
		w.mu.Lock()
		s, ok := ci.localSAN, ci.hasLocalSAN
		w.mu.Unlock()
		if ok {
			return peerSAN, s
		}
	}
	peerSAN = strings.Clone(peerSAN) // the next read reuses Envoy's scratch string
	s, err := Reads.Property(f.cb, localProp)
	if err != nil || s == "" {
		return peerSAN, "" // not cached: a missing SAN may be a transient state
	}
	s = strings.Clone(s)
	if peerSAN != "" && ci != nil {
		w.mu.Lock()
		ci.localSAN, ci.hasLocalSAN = s, true
		w.mu.Unlock()
	}
	return peerSAN, s
}
