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

	// SeedFromTelemetry would pre-learn dependencies from existing
	// istio_requests_total series. NOT IMPLEMENTED: setting it is reported
	// in the Ready condition's message and has no effect.
	// +optional
	SeedFromTelemetry bool `json:"seedFromTelemetry,omitempty"`

	// Egress is the lazy egress gateway first calls go through.
	// +optional
	// +kubebuilder:default={}
	Egress LazyEgress `json:"egress,omitempty"`
}

// Condition types and reasons of LazyXDS.
const (
	// ConditionConflict is True when a user's Sidecar already selects a
	// workload of the policy: that workload is left alone (no leanmesh Sidecar).
	ConditionConflict = "Conflict"

	ReasonLearning        = "Learning"
	ReasonNoWorkloads     = "NoWorkloads"
	ReasonUserSidecar     = "UserSidecar"
	ReasonNoConflict      = "NoConflict"
	ReasonUnselectable    = "UnselectableWorkload"
	ReasonSidecarApplyErr = "SidecarApplyFailed"
	ReasonPersistFailed   = "PersistFailed"
)

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
	SchemeBuilder.Register(&LazyXDS{}, &LazyXDSList{})
}
