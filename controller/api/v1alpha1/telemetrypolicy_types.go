package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Mode says whose telemetry a workload runs.
// +kubebuilder:validation:Enum=Istio;LeanMesh;Shadow
type Mode string

const (
	// ModeIstio: Istio's own metadata exchange and stats; leanmesh renders
	// nothing (and removes what it rendered before).
	ModeIstio Mode = "Istio"
	// ModeLeanMesh (hybrid): leanmesh replaces Istio's HTTP metadata
	// exchange and HTTP stats (istio_requests_total, durations, sizes, gRPC
	// message counts); Istio's own filters keep recording TCP
	// (istio_tcp_*) and its TCP exchange stays.
	ModeLeanMesh Mode = "LeanMesh"
	// ModeShadow: Istio keeps everything; leanmesh observes and records the
	// HTTP families alongside, under leanmesh_shadow_istio_* names on its own
	// port, so the two can be compared without doubling Istio's dashboards.
	ModeShadow Mode = "Shadow"
)

// Protocol is a kind of traffic leanmesh records.
// +kubebuilder:validation:Enum=HTTP;TCP
type Protocol string

const (
	ProtocolHTTP Protocol = "HTTP"
	ProtocolTCP  Protocol = "TCP"
)

// TrafficContext is where in the proxy the filters go.
// +kubebuilder:validation:Enum=inbound;outbound;gateway
type TrafficContext string

const (
	ContextInbound  TrafficContext = "inbound"  // SIDECAR_INBOUND, reporter=destination
	ContextOutbound TrafficContext = "outbound" // SIDECAR_OUTBOUND, reporter=source
	ContextGateway  TrafficContext = "gateway"  // GATEWAY, reporter=source
)

// WorkloadSelector selects pods by labels, like Istio's workloadSelector.
type WorkloadSelector struct {
	// MatchLabels selects pods carrying all these labels. Empty selects every
	// pod of the namespace (mesh-wide in Istio's root namespace).
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
}

// MetricOverride customises one standard metric, or all of them when name is
// empty. Same vocabulary as Istio's stats filter and leanmesh's plugin_config.
type MetricOverride struct {
	// Name is a standard metric, short ("requests_total") or full
	// ("istio_requests_total"); empty means every metric.
	// +optional
	Name string `json:"name,omitempty"`
	// Drop stops recording the metric.
	// +optional
	Drop bool `json:"drop,omitempty"`
	// TagsToRemove are standard labels to leave out.
	// +optional
	// +listType=set
	TagsToRemove []string `json:"tagsToRemove,omitempty"`
	// Dimensions adds or overrides labels: label name → expression
	// ('literal', request.headers['name'] or an attribute path).
	// +optional
	Dimensions map[string]string `json:"dimensions,omitempty"`
}

// MetadataExchange tunes leanmesh's own metadata exchange (LeanMesh mode).
type MetadataExchange struct {
	// SendTo: in_mesh (default, never toward non-mesh destinations) or all
	// (Istio's default).
	// +optional
	// +kubebuilder:validation:Enum=in_mesh;all
	SendTo string `json:"sendTo,omitempty"`
	// PeerCacheSize bounds each worker's peer cache (default 500, as Istio).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	PeerCacheSize int32 `json:"peerCacheSize,omitempty"`
	// CertificatePrincipalsOnly takes destination_principal on the client
	// side only from the upstream's TLS certificate. By default, as Istio
	// 1.29+ does, a plaintext call reports the IDENTITY the server sent in
	// its metadata-exchange headers (trusted like every other exchanged
	// label). source_principal on the server side is certificate-only
	// either way.
	// +optional
	CertificatePrincipalsOnly bool `json:"certificatePrincipalsOnly,omitempty"`
}

// Shadow tunes Shadow mode.
type Shadow struct {
	// IstioMetricNames records Shadow series under Istio's own names
	// (istio_requests_total...) instead of leanmesh_shadow_istio_*. Istio's
	// dashboards and Kiali then count the traffic twice unless every query
	// filters on the scrape job; only for setups that do.
	// +optional
	IstioMetricNames bool `json:"istioMetricNames,omitempty"`
}

// Exposition configures the listener Prometheus scrapes leanmesh's metrics
// from. Istio's merged 15020 endpoint does not include them.
type Exposition struct {
	// Enabled adds the listener (in every mode, Istio included).
	// +optional
	// +kubebuilder:default=true
	Enabled *bool `json:"enabled,omitempty"`
	// Port the listener binds on 0.0.0.0.
	// +optional
	// +kubebuilder:default=15095
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port,omitempty"`
	// Path answered with the Prometheus text exposition.
	// +optional
	// +kubebuilder:default="/stats/prometheus"
	// +kubebuilder:validation:Pattern=`^/`
	Path string `json:"path,omitempty"`
}

// NativeHistograms configures native histograms.
type NativeHistograms struct {
	// Schema is the bucket resolution (-4..8): bounds grow by 2^(2^-schema),
	// so 3 means ~9% wide buckets.
	// +optional
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=-4
	// +kubebuilder:validation:Maximum=8
	Schema *int32 `json:"schema,omitempty"`
}

// TelemetryPolicySpec says which workloads run whose telemetry and how.
type TelemetryPolicySpec struct {
	// Selector picks the workloads. Only pods that also carry
	// leanmesh.io/envoy-version (set where the library is installed) are
	// configured; the others are reported in status.
	// +optional
	Selector WorkloadSelector `json:"selector,omitempty"`

	// Mode: LeanMesh replaces Istio's HTTP/gRPC telemetry (Istio keeps
	// recording TCP: istio_tcp_* still come from Istio's stats filter),
	// Shadow records HTTP/gRPC beside Istio under leanmesh_shadow_* names,
	// Istio removes leanmesh's.
	// +optional
	// +kubebuilder:default=LeanMesh
	Mode Mode `json:"mode,omitempty"`

	// Shadow tunes Shadow mode.
	// +optional
	Shadow Shadow `json:"shadow,omitempty"`

	// Protocols recorded by leanmesh. Only HTTP (which covers gRPC) can be
	// installed today: TCP is refused while Envoy's Go network filter drains
	// reads (docs/tcp.md); TCP series come from Istio's filter in every mode.
	// +optional
	// +kubebuilder:default={HTTP}
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	Protocols []Protocol `json:"protocols,omitempty"`

	// Contexts: proxy sides that get the filters. Gateways are selected
	// with gateway only.
	// +optional
	// +kubebuilder:default={inbound,outbound}
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	Contexts []TrafficContext `json:"contexts,omitempty"`

	// Metrics overrides, applied in order.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	Metrics []MetricOverride `json:"metrics,omitempty"`

	// TCPReportingInterval: how often open TCP connections report bytes
	// (Istio's tcp_reporting_duration, default 5s).
	// +optional
	TCPReportingInterval *metav1.Duration `json:"tcpReportingInterval,omitempty"`

	// HistogramBuckets replaces the Envoy default bucket bounds (increasing, > 0).
	// +optional
	// +kubebuilder:validation:MaxItems=64
	HistogramBuckets []float64 `json:"histogramBuckets,omitempty"`

	// MaxSeries caps the series per metric (0: the library's default).
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxSeries int32 `json:"maxSeries,omitempty"`

	// StatsEvictionInterval removes a label set's series once it has not been
	// recorded for this long and a scrape has seen its final values, like
	// Istio's sidecar.istio.io/statsEvictionInterval for Envoy's stats
	// (docs/telemetry.md). Unset or 0s: series are kept (Istio's default).
	// +optional
	StatsEvictionInterval *metav1.Duration `json:"statsEvictionInterval,omitempty"`

	// NativeHistograms also keeps the histograms as Prometheus native
	// histograms, served in the protobuf exposition to a Prometheus that asks
	// for it (--enable-feature=native-histograms); text scrapes keep the
	// classic buckets Istio's dashboards read (docs/exposition.md).
	// +optional
	NativeHistograms *NativeHistograms `json:"nativeHistograms,omitempty"`

	// GRPCMessageCounts records istio_request/response_messages_total (default true).
	// +optional
	GRPCMessageCounts *bool `json:"grpcMessageCounts,omitempty"`

	// MetadataExchange tunes leanmesh's metadata exchange.
	// +optional
	// +kubebuilder:default={}
	MetadataExchange MetadataExchange `json:"metadataExchange,omitempty"`

	// Exposition configures the scrape listener.
	// +optional
	// +kubebuilder:default={}
	Exposition Exposition `json:"exposition,omitempty"`

	// LibraryPath is where the proxy finds leanmesh.so.
	// +optional
	// +kubebuilder:default="/etc/leanmesh/leanmesh.so"
	// +kubebuilder:validation:Pattern=`^/.*\.so$`
	LibraryPath string `json:"libraryPath,omitempty"`

	// IstioRevision targets one istiod revision (label istio.io/rev on the
	// rendered objects). Empty: the default revision.
	// +optional
	IstioRevision string `json:"istioRevision,omitempty"`

	// IstioRelease is the Istio release the proxies run, a row of leanmesh's
	// version matrix (e.g. "1.31.1"). It selects the Envoy version label the
	// pods must carry and the proxyVersion match. Default: the matrix default.
	// +optional
	// +kubebuilder:validation:Pattern=`^[0-9]+\.[0-9]+\.[0-9]+$`
	IstioRelease string `json:"istioRelease,omitempty"`

	// ProxyVersion overrides the proxyVersion regex of the rendered patches
	// (default: the release's minor, e.g. ^1\.31(\..*)?$).
	// +optional
	ProxyVersion string `json:"proxyVersion,omitempty"`

	// Priority of the rendered EnvoyFilters. The default 10 applies them after
	// user EnvoyFilters at 0, so leanmesh's INSERT_FIRST ends up first.
	// +optional
	// +kubebuilder:default=10
	Priority *int32 `json:"priority,omitempty"`
}

// ObjectRef names a rendered object.
type ObjectRef struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace"`
	Name       string `json:"name"`
}

// WorkloadRef names a selected workload and how many of its pods a list
// counts.
type WorkloadRef struct {
	Namespace string `json:"namespace"`
	// Name: the pod's canonical service (service.istio.io/canonical-name,
	// app.kubernetes.io/name or app label), else the pod name.
	Name string `json:"name"`
	// Pods is how many of its pods the list counts.
	Pods int32 `json:"pods"`
	// By is, for an overridden workload, the policy ("namespace/name")
	// that governs it instead.
	// +optional
	By string `json:"by,omitempty"`
	// ProxyVersion is, for a version skew, the Istio version the pods'
	// proxies report to istiod.
	// +optional
	ProxyVersion string `json:"proxyVersion,omitempty"`
}

// TelemetryPolicyStatus reports what was rendered and why not.
type TelemetryPolicyStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Mode in effect.
	// +optional
	Mode Mode `json:"mode,omitempty"`
	// Conditions: Ready, LibraryPresent, ProxyVersionMatch, ConfigAccepted.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// RenderedObjects are the EnvoyFilters and Telemetry resources applied.
	// +optional
	RenderedObjects []ObjectRef `json:"renderedObjects,omitempty"`
	// WorkloadsMissingLibrary are selected workloads not configured because
	// their pods lack leanmesh.io/envoy-version=<release's Envoy>.
	// +optional
	WorkloadsMissingLibrary []WorkloadRef `json:"workloadsMissingLibrary,omitempty"`
	// GovernedWorkloads are the selected workloads this policy decides for
	// (with or without the library): no more specific policy selects them.
	// +optional
	GovernedWorkloads []WorkloadRef `json:"governedWorkloads,omitempty"`
	// OverriddenWorkloads are selected workloads a more specific policy
	// governs instead (Istio's Telemetry API precedence: workload selector
	// over namespace over root namespace), each with that policy in by.
	// +optional
	OverriddenWorkloads []WorkloadRef `json:"overriddenWorkloads,omitempty"`
	// ProxyVersionSkew are governed workloads whose proxies report an Istio
	// version outside the policy's proxyVersion match (from istiod): they
	// keep Istio's telemetry, since both stacks switch on the same match.
	// +optional
	ProxyVersionSkew []WorkloadRef `json:"proxyVersionSkew,omitempty"`
}

// TelemetryPolicy switches the selected workloads between Istio's telemetry
// and leanmesh's.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ltp,categories=leanmesh
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type TelemetryPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   TelemetryPolicySpec   `json:"spec,omitempty"`
	Status TelemetryPolicyStatus `json:"status,omitempty"`
}

// TelemetryPolicyList is a list of TelemetryPolicy.
//
// +kubebuilder:object:root=true
type TelemetryPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TelemetryPolicy `json:"items"`
}

func init() {
	register(&TelemetryPolicy{}, &TelemetryPolicyList{})
}
