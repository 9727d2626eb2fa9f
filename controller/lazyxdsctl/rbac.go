package lazyxdsctl

// What the loop reads and writes: workloads, services and routes in; each lazy
// workload's Sidecar, the redirect EnvoyFilters, the lazy egress (Deployment,
// Service, its ServiceAccount, Gateway, VirtualService, EnvoyFilter) and the
// snapshot ConfigMap out. `make generate` turns these markers into
// config/rbac/lazyxds/role.yaml, which the chart grants only with
// lazyXDS.enabled.
//
// Exactly the verbs a run uses (e2e/rbac derives them from the apiserver's
// audit log and fails on a missing or an unused one): cached reads are list
// and watch; the egress objects and Gateways are only listed by label when
// garbage is collected, never watched; writes are server-side applies (patch,
// and create when new); the owner reference to the LazyXDS does not block
// its deletion, so no finalizers permission.
//
// Cluster-wide: Sidecars, the redirect EnvoyFilters and the egress-bound
// VirtualService copies live in the workloads' and routes' own namespaces.
// +kubebuilder:rbac:groups=leanmesh.io,resources=lazyxdses,verbs=list;watch
// +kubebuilder:rbac:groups=leanmesh.io,resources=lazyxdses/status,verbs=patch
// +kubebuilder:rbac:groups=networking.istio.io,resources=sidecars;virtualservices;envoyfilters,verbs=list;watch;create;patch;delete
// +kubebuilder:rbac:groups=networking.istio.io,resources=serviceentries,verbs=list;watch
// +kubebuilder:rbac:groups="",resources=services,verbs=list;watch
// seedFromTelemetry's Prometheus credentials, read one by one (never listed or watched):
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
//
// The snapshot ConfigMap, in the controller's namespace (leanmesh-system
// stands for it: the chart grants it in the release namespace, whether or not
// leader election is on). It is read once at start and applied after.
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;create;patch,namespace=leanmesh-system
//
// The egress's own objects, only in the namespaces it may live in
// (istio-system stands for them: the chart grants this Role in each of
// lazyXDS.egressNamespaces, and the controller writes nowhere else,
// --lazyxds-egress-namespaces). Its Services are listed with every Service.
// +kubebuilder:rbac:groups="",resources=services,verbs=create;patch;delete,namespace=istio-system
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=list;create;patch;delete,namespace=istio-system
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=list;create;patch;delete,namespace=istio-system
// +kubebuilder:rbac:groups=networking.istio.io,resources=gateways,verbs=list;create;patch;delete,namespace=istio-system
