package httpstats

import (
	"strconv"
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
