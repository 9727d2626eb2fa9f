package dataplane

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/leanmesh/leanmesh/e2e/envoyhost"
	"github.com/leanmesh/leanmesh/filters/peer"
)

// istioMX stands in for Istio's own HTTP metadata exchange filter
// (istio.metadata_exchange, the peer_metadata filter of Envoy v1.39:
// contrib/istio/filters/http/peer_metadata/source/peer_metadata.cc), which
// Shadow mode keeps in every HTTP chain and the C host does not run. leanmesh
// observes in Shadow mode (metadata_exchange.mode=observe: it reads the peer
// headers and never adds, strips or echoes them), so without this stand-in
// every Shadow series would carry unknown peers, which is not what a real
// Shadow-mode proxy records.
//
// It does only what istiod configures that filter to do on a sidecar
// (pilot/pkg/xds/filters/filters.go SidecarOutboundMetadataFilter:
// upstream_discovery istio_headers + workload_discovery, upstream_propagation
// istio_headers; SidecarInboundMetadataFilter: downstream_discovery and
// downstream_propagation istio_headers), at the position istiod gives it: the
// first HTTP filter, so on the decode path it runs before leanmesh and on the
// encode path after it. workload_discovery finds nothing on a sidecar without
// a workload-metadata provider, so it is left out.
type istioMX struct {
	id    string // node id: x-envoy-peer-metadata-id
	value string // x-envoy-peer-metadata
}

// newIstioMX computes the headers as MXPropagationMethod's constructor does:
// id_ is the node id, value_ is computeValue(), i.e. the node metadata through
// convertStructToWorkloadMetadata → convertWorkloadMetadataToStruct →
// serializeToStringDeterministic → base64. peer.NewLocal implements those
// steps; filters/peer's TestLocalFromNode checks it against headers written
// from Istio's code for istio-agent 1.31 nodes (testdata/nodes). The node is
// the one istio-agent sends for the pod (the same keys as
// testdata/nodes/deployment-1.31.json).
func newIstioMX(t testing.TB, p pod, nodeID string) *istioMX {
	t.Helper()
	meta, err := structpb.NewStruct(map[string]any{
		"CLUSTER_ID": "Kubernetes", "INSTANCE_IPS": p.ip, "ISTIO_VERSION": "1.31.1", "MESH_ID": "cluster.local",
		"NAME": p.name, "NAMESPACE": p.ns, "SERVICE_ACCOUNT": p.sa, "WORKLOAD_NAME": p.workload,
		"OWNER": "kubernetes://apis/apps/v1/namespaces/" + p.ns + "/deployments/" + p.workload,
		"LABELS": map[string]any{
			"app": p.app, "version": p.version, "security.istio.io/tlsMode": "istio",
			"service.istio.io/canonical-name": p.app, "service.istio.io/canonical-revision": p.version,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := peer.NewLocal(nodeID, meta, peer.EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &istioMX{id: l.ID, value: l.HeaderValue}
}

// injectUpstream is the client side's Filter::decodeHeaders →
// injectUpstream → MXPropagationMethod::inject with downstream_=false: both
// headers set on every request, unless skipMXHeaders (the cluster's
// istio.disable_mx; skip_external_clusters is off in the config istiod sends).
func (m *istioMX) injectUpstream(h envoyhost.Headers, cluster *corev3.Metadata) envoyhost.Headers {
	if cluster.GetFilterMetadata()["istio"].GetFields()["disable_mx"].GetBoolValue() {
		return h
	}
	return setHeader(setHeader(h, mxIDHeader, m.id), mxHeader, m.value)
}

// injectDownstream is the server side's Filter::encodeHeaders →
// injectDownstream → MXPropagationMethod::inject with downstream_=true: each
// header only if the request carried it (ctx.request_peer_id_received_,
// ctx.request_peer_received_, recorded by MXMethod::derivePeerInfo).
func (m *istioMX) injectDownstream(resp, req envoyhost.Headers) envoyhost.Headers {
	if has(req, mxIDHeader) {
		resp = setHeader(resp, mxIDHeader, m.id)
	}
	if has(req, mxHeader) {
		resp = setHeader(resp, mxHeader, m.value)
	}
	return resp
}

// removeMX is FilterConfig::discover's MXMethod::remove: after reading, the
// filter removes both headers, so the app never sees them.
func removeMX(h envoyhost.Headers) envoyhost.Headers {
	var out envoyhost.Headers
	for _, kv := range h {
		if kv[0] != mxHeader && kv[0] != mxIDHeader {
			out = append(out, kv)
		}
	}
	return out
}

// setHeader is HeaderMap::setReference: replace every value of key with one,
// on a copy (the exchange's header lists are reused across requests).
func setHeader(h envoyhost.Headers, key, value string) envoyhost.Headers {
	out := envoyhost.Headers{}
	for _, kv := range h {
		if kv[0] != key {
			out = append(out, kv)
		}
	}
	return append(out, [2]string{key, value})
}
