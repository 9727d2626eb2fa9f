package peer

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Node is the part of envoy.config.core.v3.Node leanmesh needs.
type Node struct {
	ID       string
	Metadata *structpb.Struct // never nil
	Region   string           // locality.region
	Zone     string           // locality.zone
}

// Field numbers in envoy.config.core.v3.Node and .Locality. Parsing them with
// protowire keeps go-control-plane's generated code out of this package.
const (
	nodeFieldID       = 1
	nodeFieldMetadata = 3
	nodeFieldLocality = 4
	localityRegion    = 1
	localityZone      = 2
)

// NodeFromProto parses a serialized envoy.config.core.v3.Node (what Envoy's
// `xds.node` property returns). Errors wrap ErrProto.
func NodeFromProto(b []byte) (*Node, error) {
	n := &Node{Metadata: &structpb.Struct{}}
	err := walkFields(b, func(num protowire.Number, v []byte) error {
		switch num {
		case nodeFieldID:
			n.ID = string(v)
		case nodeFieldMetadata:
			// A repeated message field merges, as in any protobuf parser.
			return proto.UnmarshalOptions{Merge: true}.Unmarshal(v, n.Metadata)
		case nodeFieldLocality:
			return walkFields(v, func(num protowire.Number, v []byte) error {
				switch num {
				case localityRegion:
					n.Region = string(v)
				case localityZone:
					n.Zone = string(v)
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: node: %v", ErrProto, err)
	}
	return n, nil
}

// walkFields calls fn for each length-delimited field of b and skips the rest.
func walkFields(b []byte, fn func(protowire.Number, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			if err := fn(num, v); err != nil {
				return err
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// EncodeOptions tune the local x-envoy-peer-metadata value.
type EncodeOptions struct {
	// AdditionalLabels are pod labels sent besides the four Istio reads
	// (peer_metadata's additional_labels).
	AdditionalLabels []string
	// Region and Zone are the node's locality, sent as REGION and
	// AVAILABILITY_ZONE (Istio 1.30+) unless the node metadata has those keys.
	Region, Zone string
}

// Local is the local proxy: its identity for the source_*/destination_*
// labels, and the metadata exchange headers it sends, computed once.
type Local struct {
	ID string // x-envoy-peer-metadata-id
	// Workload is read as istio_stats reads the node: App and Version are the
	// plain app/version labels (no app.kubernetes.io precedence, no defaults).
	Workload Workload
	// HeaderValue is x-envoy-peer-metadata: base64 with padding.
	HeaderValue string
}

// LocalFromNode is NewLocal for a parsed node, taking its locality.
func LocalFromNode(n *Node, opts EncodeOptions) (*Local, error) {
	if opts.Region == "" {
		opts.Region = n.Region
	}
	if opts.Zone == "" {
		opts.Zone = n.Zone
	}
	return NewLocal(n.ID, n.Metadata, opts)
}

// NewLocal builds the local identity and header value from node metadata.
//
// The value carries what Istio 1.31 sends: the compact set introduced in 1.24
// (NAME, NAMESPACE, WORKLOAD_NAME, CLUSTER_ID, OWNER, LABELS with
// canonical-name, canonical-revision, app, version) plus IDENTITY (1.29) and
// REGION/AVAILABILITY_ZONE (1.30) when known. Like Istio it first reads the
// node as a peer would (so LABELS.app carries app.kubernetes.io/name when
// set), omits empty keys except LABELS, and re-emits OWNER as
// kubernetes://apis/apps/v1/namespaces/<ns>/<kind>s/<workload> only for
// pods, deployments, jobs and cronjobs (StatefulSets, ReplicaSets, ... lose it).
func NewLocal(nodeID string, meta *structpb.Struct, opts EncodeOptions) (*Local, error) {
	peerView, err := workloadFromStruct(meta)
	if err != nil {
		return nil, fmt.Errorf("node metadata: %w", err)
	}
	if peerView.Region == "" {
		peerView.Region = opts.Region
	}
	if peerView.Zone == "" {
		peerView.Zone = opts.Zone
	}
	labels, _ := labelsField(meta.GetFields()) // checked by workloadFromStruct
	value, err := Encode(headerStruct(peerView, labels, opts.AdditionalLabels))
	if err != nil {
		return nil, err
	}

	w := *peerView
	// istio_stats reads the local app/version from the plain labels only.
	w.App, _ = stringField(labels, LabelApp)
	w.Version, _ = stringField(labels, LabelVersion)
	return &Local{ID: nodeID, Workload: w, HeaderValue: value}, nil
}

// headerStruct is Istio's convertWorkloadMetadataToStruct.
func headerStruct(w *Workload, nodeLabels map[string]*structpb.Value, additional []string) *structpb.Struct {
	f := map[string]*structpb.Value{}
	set := func(m map[string]*structpb.Value, k, v string) {
		if v != "" {
			m[k] = structpb.NewStringValue(v)
		}
	}
	set(f, KeyName, w.Instance)
	set(f, KeyNamespace, w.Namespace)
	set(f, KeyWorkloadName, w.Name)
	set(f, KeyClusterID, w.Cluster)
	set(f, KeyIdentity, w.Identity)
	labels := map[string]*structpb.Value{}
	set(labels, LabelCanonicalName, w.CanonicalService)
	set(labels, LabelCanonicalRevision, w.CanonicalRevision)
	set(labels, LabelApp, w.App)
	set(labels, LabelVersion, w.Version)
	for _, k := range additional {
		if v, ok := nodeLabels[k]; ok && !readLabel(k) {
			// Istio copies string_value(), so a non-string becomes "".
			labels[k] = structpb.NewStringValue(v.GetStringValue())
		}
	}
	f[KeyLabels] = structpb.NewStructValue(&structpb.Struct{Fields: labels})
	if kind := ownerKind(w.Owner, w.Name); kind != "" {
		f[KeyOwner] = structpb.NewStringValue(ownerPrefix + w.Namespace + "/" + kind + "s/" + w.Name)
	}
	set(f, KeyRegion, w.Region)
	set(f, KeyAvailabilityZone, w.Zone)
	return &structpb.Struct{Fields: f}
}

// readLabel reports the labels Istio consumes itself; they are never
// copied as additional labels.
func readLabel(k string) bool {
	return slices.Contains([]string{
		LabelCanonicalName, LabelCanonicalRevision, LabelApp, LabelVersion, LabelK8sName, LabelK8sVersion,
	}, k)
}
