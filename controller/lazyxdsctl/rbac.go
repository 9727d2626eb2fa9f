package lazyxdsctl

// What the loop reads and writes: workloads, services and routes in; each lazy
// workload's Sidecar, the redirect EnvoyFilters, the lazy egress (Deployment,
// Service, its ServiceAccount, Gateway, VirtualService) and the snapshot ConfigMap out. The
// ConfigMap is in the controller's namespace (the chart grants it there,
// whether or not leader election is on). `make generate` turns these markers
// into config/rbac/lazyxds/role.yaml, which the chart grants only with
// lazyXDS.enabled.
//
// +kubebuilder:rbac:groups=leanmesh.io,resources=lazyxdses,verbs=get;list;watch
// +kubebuilder:rbac:groups=leanmesh.io,resources=lazyxdses/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=leanmesh.io,resources=lazyxdses/finalizers,verbs=update
// +kubebuilder:rbac:groups=networking.istio.io,resources=sidecars;virtualservices;gateways,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=networking.istio.io,resources=serviceentries,verbs=get;list;watch
// +kubebuilder:rbac:groups=networking.istio.io,resources=envoyfilters,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=services;serviceaccounts,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;create;patch;update,namespace=leanmesh-system
// seedFromTelemetry's Prometheus credentials, read one by one (never listed or watched):
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
