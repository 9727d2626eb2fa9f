package lazyxdsctl

// What the loop reads and writes: workloads, services and routes in; each lazy
// workload's Sidecar, the redirect EnvoyFilters, the lazy egress (Deployment,
// Service, its ServiceAccount, Gateway, VirtualService) and the snapshot ConfigMap out. The
// ConfigMap is in the controller's namespace (the chart grants it there,
// whether or not leader election is on). `make generate` turns these markers
// into config/rbac/lazyxds/role.yaml, which the chart grants only with
// lazyXDS.enabled.
//
// Exactly the verbs a run uses (e2e/rbac derives them from the apiserver's
// audit log and fails on a missing or an unused one): cached reads are list
// and watch; the egress objects and Gateways are only listed by label when
// garbage is collected, never watched; writes are server-side applies (patch,
// and create when new); the owner reference to the LazyXDS does not block
// its deletion, so no finalizers permission.
//
// +kubebuilder:rbac:groups=leanmesh.io,resources=lazyxdses,verbs=list;watch
// +kubebuilder:rbac:groups=leanmesh.io,resources=lazyxdses/status,verbs=patch
// +kubebuilder:rbac:groups=networking.istio.io,resources=sidecars;virtualservices;envoyfilters,verbs=list;watch;create;patch;delete
// +kubebuilder:rbac:groups=networking.istio.io,resources=gateways,verbs=list;create;patch;delete
// +kubebuilder:rbac:groups=networking.istio.io,resources=serviceentries,verbs=list;watch
// +kubebuilder:rbac:groups="",resources=services,verbs=list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=list;create;patch;delete
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=list;create;patch;delete
// The snapshot is read once at start and applied after: get, create, patch.
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;create;patch,namespace=leanmesh-system
// seedFromTelemetry's Prometheus credentials, read one by one (never listed or watched):
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
