package peer

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
)

// Workload is one side's identity as Istio's labels need it. Built once per
// peer and shared by pointer (the cache hands the same pointer to every
// request), so it must be treated as immutable.
type Workload struct {
	Name              string // workload name (WORKLOAD_NAME)
	Instance          string // pod name (NAME)
	Namespace         string
	CanonicalService  string
	CanonicalRevision string
	App               string
	Version           string
	Cluster           string // CLUSTER_ID

	Owner          string // OWNER as received, e.g. kubernetes://apis/apps/v1/namespaces/ns/deployments/x
	ServiceAccount string // SERVICE_ACCOUNT, or the sa of IDENTITY
	Identity       string // IDENTITY (1.29+), a SPIFFE URI
	IstioVersion   string // ISTIO_VERSION (only the 1.8–1.22 full set carries it)
	MeshID         string // MESH_ID (idem)
	Region, Zone   string // REGION, AVAILABILITY_ZONE (1.30+)
}

// WorkloadFromStruct reads every shape of exchanged metadata Istio has sent:
//
//   - 1.8–1.22: the full node metadata (NAME, NAMESPACE, OWNER, WORKLOAD_NAME,
//     ISTIO_VERSION, MESH_ID, CLUSTER_ID, LABELS, PLATFORM_METADATA,
//     APP_CONTAINERS, INSTANCE_IPS, ...);
//   - 1.24+: the compact set NAME, NAMESPACE, WORKLOAD_NAME, CLUSTER_ID, OWNER,
//     LABELS{canonical-name, canonical-revision, app, version};
//   - 1.29+: IDENTITY; 1.30+: REGION, AVAILABILITY_ZONE.
//
// As Istio does since 1.29, LABELS[app.kubernetes.io/name|version] win over
// LABELS[app|version] when non-empty. When WORKLOAD_NAME is absent the
// workload name is taken from OWNER (Istio itself would report "unknown").
//
// Keys it does not read may hold any type. A key it reads holding anything
// but a string (LABELS: a struct) is ErrShape; a null counts as absent.
func WorkloadFromStruct(s *structpb.Struct) (*Workload, error) {
	w, err := workloadFromStruct(s)
	if err != nil {
		return nil, err
	}
	if w.Name == "" {
		w.Name, _ = ownerWorkload(w.Owner)
	}
	return w, nil
}

// workloadFromStruct is WorkloadFromStruct without the OWNER fallback, which
// is what Istio computes when it re-encodes its own node metadata.
func workloadFromStruct(s *structpb.Struct) (*Workload, error) {
	w := &Workload{}
	f := s.GetFields()
	for _, t := range [...]struct {
		key string
		dst *string
	}{
		{KeyName, &w.Instance},
		{KeyNamespace, &w.Namespace},
		{KeyOwner, &w.Owner},
		{KeyWorkloadName, &w.Name},
		{KeyClusterID, &w.Cluster},
		{KeyIdentity, &w.Identity},
		{KeyRegion, &w.Region},
		{KeyAvailabilityZone, &w.Zone},
		{KeyIstioVersion, &w.IstioVersion},
		{KeyMeshID, &w.MeshID},
		{KeyServiceAccount, &w.ServiceAccount},
	} {
		v, err := stringField(f, t.key)
		if err != nil {
			return nil, err
		}
		*t.dst = v
	}
	labels, err := labelsField(f)
	if err != nil {
		return nil, err
	}
	var app, k8sName, version, k8sVersion string
	for _, t := range [...]struct {
		key string
		dst *string
	}{
		{LabelCanonicalName, &w.CanonicalService},
		{LabelCanonicalRevision, &w.CanonicalRevision},
		{LabelApp, &app},
		{LabelK8sName, &k8sName},
		{LabelVersion, &version},
		{LabelK8sVersion, &k8sVersion},
	} {
		v, err := stringField(labels, t.key)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", KeyLabels, err)
		}
		*t.dst = v
	}
	// Istio's loop makes the qualified label win whatever the map order; an
	// empty qualified label is order-dependent there, here it falls back.
	w.App = firstNonEmpty(k8sName, app)
	w.Version = firstNonEmpty(k8sVersion, version)
	if w.ServiceAccount == "" && w.Identity != "" {
		if _, _, sa, ok := ParseSPIFFE(w.Identity); ok {
			w.ServiceAccount = sa
		}
	}
	return w, nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// stringField returns fields[key] as a string; absent and null are "".
func stringField(fields map[string]*structpb.Value, key string) (string, error) {
	v, ok := fields[key]
	if !ok || v == nil {
		return "", nil
	}
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return k.StringValue, nil
	case nil, *structpb.Value_NullValue:
		return "", nil
	default:
		return "", fmt.Errorf("%w: %s is %s, want a string", ErrShape, key, kindName(v))
	}
}

func labelsField(fields map[string]*structpb.Value) (map[string]*structpb.Value, error) {
	v, ok := fields[KeyLabels]
	if !ok || v == nil {
		return nil, nil
	}
	switch k := v.GetKind().(type) {
	case *structpb.Value_StructValue:
		return k.StructValue.GetFields(), nil
	case nil, *structpb.Value_NullValue:
		return nil, nil
	default:
		return nil, fmt.Errorf("%w: %s is %s, want a struct", ErrShape, KeyLabels, kindName(v))
	}
}

func kindName(v *structpb.Value) string {
	switch v.GetKind().(type) {
	case *structpb.Value_NumberValue:
		return "a number"
	case *structpb.Value_BoolValue:
		return "a bool"
	case *structpb.Value_StructValue:
		return "a struct"
	case *structpb.Value_ListValue:
		return "a list"
	case *structpb.Value_StringValue:
		return "a string"
	}
	return "null"
}

const ownerPrefix = "kubernetes://apis/apps/v1/namespaces/"

// ownerWorkload reads the workload name out of an OWNER
// "kubernetes://apis/<group/version>/namespaces/<ns>/<kind>s/<name>".
func ownerWorkload(owner string) (string, bool) {
	if !strings.HasPrefix(owner, "kubernetes://apis/") {
		return "", false
	}
	_, rest, ok := strings.Cut(owner, "/namespaces/")
	if !ok {
		return "", false
	}
	ns, rest, ok := strings.Cut(rest, "/")
	if !ok || ns == "" {
		return "", false
	}
	kind, name, ok := strings.Cut(rest, "/")
	if !ok || kind == "" || name == "" || strings.IndexByte(name, '/') >= 0 {
		return "", false
	}
	return name, true
}

// ownerKind is Istio's parseOwner: strip "s/<workload>" from the owner and
// keep the last path segment if it is one of the kinds Istio re-emits. Like
// Istio it does not check that the stripped suffix really is "s/<workload>".
func ownerKind(owner, workload string) string {
	if len(owner) <= len(workload)+2 {
		return ""
	}
	owner = owner[:len(owner)-len(workload)-2]
	i := strings.LastIndexByte(owner, '/')
	if i < 0 {
		return ""
	}
	switch k := owner[i+1:]; k {
	case "pod", "deployment", "job", "cronjob":
		return k
	}
	return ""
}

// ParseWorkloadMetadata reads the endpoint metadata
// filter_metadata.istio.workload = "<workload>;<namespace>;<canonical-name>;<canonical-revision>;<cluster-id>"
// that a client uses when the server sent no peer metadata. Like Istio it
// needs at least five fields, ignores extra ones and allows empty ones.
// The returned fields are substrings of s.
func ParseWorkloadMetadata(s string) (*Workload, bool) {
	var parts [5]string
	rest := s
	for i := range parts {
		var ok bool
		parts[i], rest, ok = strings.Cut(rest, ";")
		if !ok && i < len(parts)-1 {
			return nil, false
		}
	}
	return &Workload{
		Name:              parts[0],
		Namespace:         parts[1],
		CanonicalService:  parts[2],
		CanonicalRevision: parts[3],
		Cluster:           parts[4],
	}, true
}

// ParseSPIFFE splits an Istio identity spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
// It is strict: any other path, or an empty part, is not ok.
func ParseSPIFFE(uri string) (trustDomain, namespace, serviceAccount string, ok bool) {
	rest, ok := strings.CutPrefix(uri, "spiffe://")
	if !ok {
		return "", "", "", false
	}
	td, path, ok := strings.Cut(rest, "/")
	if !ok || td == "" {
		return "", "", "", false
	}
	path, ok = strings.CutPrefix(path, "ns/")
	if !ok {
		return "", "", "", false
	}
	ns, path, ok := strings.Cut(path, "/")
	if !ok || ns == "" {
		return "", "", "", false
	}
	sa, ok := strings.CutPrefix(path, "sa/")
	if !ok || sa == "" || strings.IndexByte(sa, '/') >= 0 {
		return "", "", "", false
	}
	return td, ns, sa, true
}

// PeerNamespace is the namespace Istio reports for the peer: the one in the
// peer's certificate URI SAN when there is one, else the one the peer
// claimed in its metadata. The certificate wins because the metadata is
// self-asserted. It reproduces istio_stats' getNamespace exactly, which is
// looser than ParseSPIFFE: the text after the first "/ns/" up to the next "/".
func PeerNamespace(principal, claimed string) string {
	if _, after, ok := strings.Cut(principal, "/ns/"); ok {
		ns, _, _ := strings.Cut(after, "/")
		if ns != "" {
			return ns
		}
	}
	return claimed
}
