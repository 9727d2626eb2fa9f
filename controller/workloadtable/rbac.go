package workloadtable

// The workload table's informers and the TokenReview that authenticates each
// proxy's stream. `make generate` turns these markers into
// config/rbac/workload-table/role.yaml, which the chart grants only with
// workloadTable.enabled.
//
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=networking.istio.io,resources=workloadentries,verbs=get;list;watch
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
