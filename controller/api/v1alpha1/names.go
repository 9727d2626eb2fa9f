package v1alpha1

// Names shared by the controller's packages (render, install, lazyxdsctl,
// the CLI and the e2e harnesses). Each is declared here once, as
// go-control-plane's pkg/resource/v3 does for type URLs: a second copy would
// be a second place to change.
const (
	// FieldOwner is the server-side apply manager of everything leanmesh writes.
	FieldOwner = "leanmesh"
	// Finalizer removes a TelemetryPolicy's rendered objects on deletion;
	// owner references cannot, because a mesh-wide policy's Telemetry copies
	// live in other namespaces.
	Finalizer = "leanmesh.io/cleanup"

	// LabelManagedBy (=ManagedBy) marks every object leanmesh renders.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "leanmesh"
	// LabelComponent tells the lazy-xDS loop's objects apart from the
	// TelemetryPolicy reconciler's.
	LabelComponent = "leanmesh.io/component"

	// LabelPolicy and LabelPolicyNamespace name the TelemetryPolicy an
	// object was rendered for (a mesh-wide policy's objects live in other
	// namespaces, so the namespace is needed to tell same-named policies apart).
	LabelPolicy          = "leanmesh.io/policy"
	LabelPolicyNamespace = "leanmesh.io/policy-namespace"
	// LabelLazyXDS and LabelLazyXDSNamespace name the LazyXDS an object was
	// rendered for.
	LabelLazyXDS          = "leanmesh.io/lazyxds"
	LabelLazyXDSNamespace = "leanmesh.io/lazyxds-namespace"

	// LabelEnvoyVersion is set on pods whose proxy carries the library,
	// valued with the Envoy version it was built for (envoy-build/versions.tsv).
	LabelEnvoyVersion = "leanmesh.io/envoy-version"
	// LabelRevision is Istio's revision label (istio.io/rev): on a pod or
	// namespace it picks the istiod revision; on config it limits which
	// revision reads it.
	LabelRevision = "istio.io/rev"
)
