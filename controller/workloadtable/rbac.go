package workloadtable

// The workload table's informers (list, watch: reads go through the cache)
// and the TokenReview that authenticates each proxy's stream. e2e/rbac
// fails on a missing or an unused verb. `make generate` turns these markers into
// config/rbac/workload-table/role.yaml, which the chart grants only with
// workloadTable.enabled.
//
// +kubebuilder:rbac:groups="",resources=pods,verbs=list;watch
// +kubebuilder:rbac:groups=networking.istio.io,resources=workloadentries,verbs=list;watch
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
