package httpstats

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/leanmesh/leanmesh/filters/telemetry"
)

// clusterInfo is what the filter needs from an upstream cluster, decoded once
// per cluster name and worker from `xds.cluster_metadata`.
type clusterInfo struct {
	name      string             // the cluster's name, owned
	service   *telemetry.Service // from filter_metadata.istio.services[0]; nil if none
	inMesh    bool               // an Istio outbound cluster of a mesh service
	disableMX bool               // istio.disable_mx: never gets MX headers, whatever send_to says
	external  bool               // istio.external (istiod's mark for MESH_EXTERNAL services)
	// The local certificate's URI SAN on this cluster's TLS connections,
	// once read (guarded by the worker's mutex; see filter.localSAN).
	localSAN    string
	hasLocalSAN bool
}

// decodeClusterInfo parses a serialized envoy.config.core.v3.Metadata.
func decodeClusterInfo(name string, raw []byte) *clusterInfo {
	ci := &clusterInfo{name: name}
	var md corev3.Metadata
	if len(raw) > 0 && proto.Unmarshal(raw, &md) == nil {
		istio := md.GetFilterMetadata()["istio"]
		if svcs := istio.GetFields()["services"].GetListValue().GetValues(); len(svcs) > 0 {
			f := svcs[0].GetStructValue().GetFields()
			ci.service = &telemetry.Service{
				Host:      strings.Clone(f["host"].GetStringValue()),
				Name:      strings.Clone(f["name"].GetStringValue()),
				Namespace: strings.Clone(f["namespace"].GetStringValue()),
			}
		}
		ci.disableMX = truthy(istio.GetFields()["disable_mx"])
		ci.external = truthy(istio.GetFields()["external"])
	}
	ci.inMesh = strings.HasPrefix(name, "outbound|") && ci.service != nil && !ci.disableMX && !ci.external
	return ci
}

// truthy reads a flag as peer_metadata's skipMXHeaders does (bool_value():
// only a bool true counts; istiod writes these flags as bools).
func truthy(v *structpb.Value) bool { return v.GetBoolValue() }

// isSpecialCluster: never in mesh, never gets MX headers.
func isSpecialCluster(name string) bool {
	_, ok := specialCluster(name)
	return ok
}

// specialCluster returns Istio's name for a special cluster as a constant,
// so a borrowed name need not be copied (istio_stats.cc populatePeerInfo
// lists the same five).
func specialCluster(name string) (string, bool) {
	for _, s := range [...]string{"PassthroughCluster", "BlackHoleCluster", "InboundPassthroughCluster",
		"InboundPassthroughClusterIpv4", "InboundPassthroughClusterIpv6"} {
		if name == s {
			return s, true
		}
	}
	return "", false
}

// workloadFromHostMetadata extracts filter_metadata.istio.workload from a
// serialized envoy.config.core.v3.Metadata.
func workloadFromHostMetadata(raw []byte) string {
	var md corev3.Metadata
	if proto.Unmarshal(raw, &md) != nil {
		return ""
	}
	return md.GetFilterMetadata()["istio"].GetFields()["workload"].GetStringValue()
}
