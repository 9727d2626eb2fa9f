package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// LazyEgress names the lazy egress gateway a policy's workloads are
// redirected to (rendered by the controller: Deployment, Service, Gateway,
// VirtualService, EnvoyFilter).
type LazyEgress struct {
	// Namespace of the egress gateway.
	// +optional
	// +kubebuilder:default="istio-system"
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace,omitempty"`
	// Name of the egress Deployment, Service and Gateway.
	// +optional
	// +kubebuilder:default="leanmesh-lazy-egress"
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name,omitempty"`
}

// LazyXDSSpec says which workloads only receive the xDS config of services
// they were seen calling.
type LazyXDSSpec struct {
	// Selector picks the lazy workloads. Empty selects every workload of the
	// namespace; a LazyXDS in Istio's root namespace applies to every
	// namespace except NeverLazyNamespaces (a namespaced LazyXDS wins over it).
	// +optional
	Selector WorkloadSelector `json:"selector,omitempty"`

	// ExtraEgressHosts are Sidecar egress hosts ("<namespace>/<host>", as in
	// Istio's Sidecar) every selected workload always sees, e.g. services
	// reached over protocols the redirect cannot see.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:Pattern=`^[-a-z0-9.*~]+/[-a-zA-Z0-9_.*]+$`
	ExtraEgressHosts []string `json:"extraEgressHosts,omitempty"`

	// NeverLazyNamespaces are left alone by a root-namespace LazyXDS.
	// kube-system and the root namespace are never lazy. Ignored elsewhere.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	NeverLazyNamespaces []string `json:"neverLazyNamespaces,omitempty"`

	// DependencyExpiry forgets a learned dependency not seen for this long.
	// Off by default: once visible, calls bypass the egress, so an expired
	// dependency is re-learned on its next call (one extra hop).
	// +optional
	DependencyExpiry *metav1.Duration `json:"dependencyExpiry,omitempty"`

	// SeedFromTelemetry pre-learns dependencies from the mesh's standard
	// request metrics (istio_requests_total{reporter="source"}, written by
	// Istio's telemetry and by leanmesh alike), so workloads start with the
	// services they were already calling and first calls go direct.
	// Queried when the policy appears, when the controller starts and every
	// interval; a failed query is reported (condition Seeded=False) and
	// leaves learning to the access logs.
	// +optional
	SeedFromTelemetry *TelemetrySeed `json:"seedFromTelemetry,omitempty"`

	// Egress is the lazy egress gateway first calls go through.
	// +optional
	// +kubebuilder:default={}
	Egress LazyEgress `json:"egress,omitempty"`
}

// TelemetrySeed says where and how to read the call graph.
type TelemetrySeed struct {
	// Prometheus is the server holding the istio_requests_total series.
	Prometheus PrometheusEndpoint `json:"prometheus"`
	// LookBack is the window an edge must have been called in (default 24h).
	// +optional
	LookBack *metav1.Duration `json:"lookBack,omitempty"`
	// MinRate is the lowest request rate (requests per second averaged over
	// LookBack) an edge needs to be seeded, e.g. "0.001". Default "0": any
	// call in the window.
	// +optional
	// +kubebuilder:validation:Pattern=`^[0-9]+(\.[0-9]+)?([eE]-?[0-9]+)?$`
	MinRate string `json:"minRate,omitempty"`
	// Interval between queries (default 10m); also queried when the policy
	// appears or changes and when the controller starts.
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`
	// MaxEdges bounds one query: the busiest MaxEdges edges are kept
	// (topk), the rest reported as truncated. Default 200000.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=2000000
	MaxEdges int32 `json:"maxEdges,omitempty"`
	// Timeout of one query, server and client side (default 1m).
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`
}

// PrometheusEndpoint is a Prometheus HTTP API endpoint. Secrets are read
// from the LazyXDS's namespace.
type PrometheusEndpoint struct {
	// URL of the server, e.g. http://prometheus.monitoring:9090 (a path
	// prefix is kept: https://host/prometheus).
	// +kubebuilder:validation:Pattern=`^https?://`
	// +kubebuilder:validation:MaxLength=2048
	URL string `json:"url"`
	// BearerTokenSecret holds a bearer token.
	// +optional
	BearerTokenSecret *SecretKeySelector `json:"bearerTokenSecret,omitempty"`
	// BasicAuth holds a username and password.
	// +optional
	BasicAuth *BasicAuth `json:"basicAuth,omitempty"`
	// TLS configures https URLs.
	// +optional
	TLS *PrometheusTLS `json:"tls,omitempty"`
}

// SecretKeySelector names one key of a Secret in the policy's namespace.
type SecretKeySelector struct {
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key"`
}

// BasicAuth reads HTTP basic credentials from Secrets.
type BasicAuth struct {
	Username SecretKeySelector `json:"username"`
	Password SecretKeySelector `json:"password"`
}

// PrometheusTLS configures the client side of TLS.
type PrometheusTLS struct {
	// CA verifies the server (PEM); default: the system roots.
	// +optional
	CA *SecretKeySelector `json:"ca,omitempty"`
	// Cert and Key are a client certificate (PEM), both or neither.
	// +optional
	Cert *SecretKeySelector `json:"cert,omitempty"`
	// +optional
	Key *SecretKeySelector `json:"key,omitempty"`
	// ServerName overrides the name verified in the server's certificate.
	// +optional
	ServerName string `json:"serverName,omitempty"`
	// InsecureSkipVerify disables server verification (testing only).
	// +optional
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
}

// LazyXDSStatus reports what the loop did for the policy.
type LazyXDSStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready, Conflict.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Workloads selected and lazy (conflicting ones excluded).
	// +optional
	Workloads int32 `json:"workloads,omitempty"`
	// LearnedDependencies summed over the policy's workloads.
	// +optional
	LearnedDependencies int32 `json:"learnedDependencies,omitempty"`
	// LastFlushTime is when a Sidecar of this policy was last written or deleted.
	// +optional
	LastFlushTime *metav1.Time `json:"lastFlushTime,omitempty"`
	// ConflictingWorkloads lists "<namespace>/<workload>" left alone (at most 50).
	// +optional
	ConflictingWorkloads []string `json:"conflictingWorkloads,omitempty"`
	// SeededDependencies counts the LearnedDependencies whose origin is
	// telemetry (seedFromTelemetry) rather than an access log.
	// +optional
	SeededDependencies int32 `json:"seededDependencies,omitempty"`
	// Seed reports the last telemetry query (seedFromTelemetry only).
	// +optional
	Seed *SeedStatus `json:"seed,omitempty"`
	// EgressVirtualServices counts the egress-bound copies of VirtualServices
	// of lazy hosts the controller renders, so first calls follow the
	// user's routing.
	// +optional
	EgressVirtualServices int32 `json:"egressVirtualServices,omitempty"`
	// UnreproducibleRoutes lists "<namespace>/<VirtualService>: <why>" for
	// rules the egress cannot apply to a first call (sourceLabels,
	// sourceNamespace, gateway-only or per-port matches...), at most 50.
	// +optional
	UnreproducibleRoutes []string `json:"unreproducibleRoutes,omitempty"`
}

// SeedStatus is the outcome of the last telemetry query.
type SeedStatus struct {
	// LastQueryTime is when the last query finished (success or not).
	// +optional
	LastQueryTime *metav1.Time `json:"lastQueryTime,omitempty"`
	// LastSuccessTime is when a query last succeeded.
	// +optional
	LastSuccessTime *metav1.Time `json:"lastSuccessTime,omitempty"`
	// Edges returned by the last successful query.
	// +optional
	Edges int32 `json:"edges,omitempty"`
	// Added is how many of them were new dependencies.
	// +optional
	Added int32 `json:"added,omitempty"`
	// Skipped edges: caller not a lazy workload of this policy, or
	// destination not a known lazy service.
	// +optional
	Skipped int32 `json:"skipped,omitempty"`
	// Truncated is true when the query hit maxEdges.
	// +optional
	Truncated bool `json:"truncated,omitempty"`
}

// LazyXDS makes the selected workloads lazy: each gets a Sidecar that starts
// with the baseline hosts and grows with the services it is seen calling
// through the lazy egress gateway.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:path=lazyxdses,singular=lazyxds,shortName=lxds,categories=leanmesh
// +kubebuilder:printcolumn:name="Workloads",type=integer,JSONPath=`.status.workloads`
// +kubebuilder:printcolumn:name="Deps",type=integer,JSONPath=`.status.learnedDependencies`
// +kubebuilder:printcolumn:name="Seeded",type=integer,JSONPath=`.status.seededDependencies`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Conflict",type=string,JSONPath=`.status.conditions[?(@.type=="Conflict")].status`
// +kubebuilder:printcolumn:name="Last Flush",type=date,JSONPath=`.status.lastFlushTime`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type LazyXDS struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   LazyXDSSpec   `json:"spec,omitempty"`
	Status LazyXDSStatus `json:"status,omitempty"`
}

// LazyXDSList is a list of LazyXDS.
//
// +kubebuilder:object:root=true
type LazyXDSList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []LazyXDS `json:"items"`
}

func init() {
	register(&LazyXDS{}, &LazyXDSList{})
}
