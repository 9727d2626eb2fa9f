// Package peer holds what leanmesh knows about the two sides of a request:
// the local proxy's identity (from its Envoy node), the peer's identity (from
// Istio's metadata exchange headers, or endpoint metadata as a fallback), and
// a per-worker cache of decoded peers.
//
// It is pure Go on purpose: no cgo and no Envoy SDK import, so it can be
// tested, fuzzed and benchmarked with plain `go test`.
//
// The wire format follows istio/proxy (extensions/common/metadata_object.cc
// and source/extensions/filters/http/peer_metadata/filter.cc, release 1.31):
//
//	x-envoy-peer-metadata-id: <Envoy node id>
//	x-envoy-peer-metadata:    base64(deterministic google.protobuf.Struct)
//
// Istio emits standard base64 with padding and accepts values without it.
// The Struct keys a proxy sends changed across releases (see Local and
// WorkloadFromStruct); a receiver must accept all of them.
package peer

// Header names of Istio's HTTP metadata exchange.
const (
	HeaderMetadata   = "x-envoy-peer-metadata"
	HeaderMetadataID = "x-envoy-peer-metadata-id"
)

// Struct keys of the exchanged metadata and of the node metadata (they are
// the same names: Istio builds one from the other).
const (
	KeyName             = "NAME"
	KeyNamespace        = "NAMESPACE"
	KeyOwner            = "OWNER"
	KeyWorkloadName     = "WORKLOAD_NAME"
	KeyClusterID        = "CLUSTER_ID"
	KeyIdentity         = "IDENTITY"
	KeyLabels           = "LABELS"
	KeyRegion           = "REGION"
	KeyAvailabilityZone = "AVAILABILITY_ZONE"
	KeyIstioVersion     = "ISTIO_VERSION"
	KeyMeshID           = "MESH_ID"
	KeyServiceAccount   = "SERVICE_ACCOUNT"
)

// Label keys inside LABELS that Istio's telemetry reads.
const (
	LabelCanonicalName     = "service.istio.io/canonical-name"
	LabelCanonicalRevision = "service.istio.io/canonical-revision"
	LabelApp               = "app"
	LabelVersion           = "version"
	// Since Istio 1.29 a receiver prefers these over app/version.
	LabelK8sName    = "app.kubernetes.io/name"
	LabelK8sVersion = "app.kubernetes.io/version"
)
