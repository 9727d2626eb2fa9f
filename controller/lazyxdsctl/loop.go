// Package lazyxdsctl runs leanmesh's lazy-xDS loop against a cluster:
//
//	informers (Pods, Services, ServiceEntries, VirtualServices, Sidecars, LazyXDS)
//	  → lazyxds.Graph ← ALS server (the lazy egress's access logs)
//	flush tick: Graph.Drain → persist the snapshot → apply/delete Sidecars
//	            → redirect EnvoyFilters and egress objects → LazyXDS status
//
// The graph (controller/lazyxds) is the pure core; this package only moves
// objects in and out of it. One Loop runs on the elected leader.
//
// Acknowledged: a learned dependency is acknowledged once it is in the
// ConfigMap snapshot. A Sidecar is only written with acknowledged
// dependencies, so anything a proxy was ever given survives a restart (even a
// kill between two flushes); an unacknowledged one is re-learned from the next
// call, which still goes through the egress because it is not visible yet.
package lazyxdsctl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/lazyxds"
	"github.com/leanmesh/leanmesh/controller/lazyxds/als"
)

const (
	// Values of v1alpha1.LabelComponent on the loop's objects.
	ComponentSidecar  = "lazyxds-sidecar"
	ComponentRedirect = "lazyxds-redirect"
	ComponentEgress   = "lazyxds-egress"
	// ComponentEgressRoutes marks the egress-bound copies of VirtualServices.
	ComponentEgressRoutes = "lazyxds-egress-routes"

	// DefaultConfigMapName holds the learned-dependency snapshot.
	DefaultConfigMapName = "leanmesh-lazyxds-state"
	// SnapshotKey is the ConfigMap binaryData key (gzipped JSON, lazyxds.Snapshot).
	SnapshotKey = "snapshot.json.gz"
)

// Options configure a Loop. Zero values get the documented defaults.
type Options struct {
	// ALSAddress is where the AccessLogService listens (default ":15014"),
	// unless ALSListener is set. Envoy's http_grpc access logger in the lazy
	// egress dials the controller's Service from inside the mesh.
	ALSAddress  string
	ALSListener net.Listener
	// ALSMeshRootFile is Istio's root certificate (PEM; the istio-ca-root-cert
	// ConfigMap mounted as a file). ALS callers must present an Istio
	// workload certificate it signed, for the service account of an egress
	// a LazyXDS names (docs/security.md). Required unless ALSPlaintext.
	ALSMeshRootFile string
	// ALSCertFile/ALSKeyFile: the ALS server certificate when ALSIstioCert
	// is not set (default: a self-signed one made at start, which the
	// egress then is not rendered to verify).
	ALSCertFile, ALSKeyFile string
	// ALSIstioCert, when set, gets the ALS server certificate from Istio's
	// CA for the controller's own identity (its Identity), and the lazy
	// egress is rendered to verify that identity (docs/security.md).
	ALSIstioCert *als.IstioCert
	// ALSPlaintext serves ALS without TLS and admits any caller: anyone who
	// reaches the port can forge dependencies. Tests only.
	ALSPlaintext bool
	// ALSLimits overrides the ALS budgets (zero fields: als defaults).
	ALSLimits als.Options
	// ALSHost/ALSPort is what the egress dials (default
	// leanmesh-controller.<Namespace>.svc.<domain> and ALSAddress's port).
	ALSHost string
	ALSPort uint32
	// IstioRevision injects the lazy egress with that istiod revision.
	IstioRevision string
	// EgressNamespaces are the namespaces the lazy egress may be written in
	// (the chart grants its Deployment, Service, ServiceAccount and Gateway
	// writes there only, as a Role). A LazyXDS naming another egress
	// namespace is not applied and says why in its Ready condition. Empty:
	// any namespace (the writes need cluster-wide grants).
	EgressNamespaces []string
	// Namespace is the controller's namespace: the snapshot ConfigMap lives there.
	Namespace     string
	ConfigMapName string // default DefaultConfigMapName
	RootNamespace string // default "istio-system"
	ClusterDomain string // default "cluster.local"
	// FlushInterval: how often Drain runs and Sidecars are written (default 1s).
	FlushInterval time.Duration
	// PersistInterval bounds snapshot writes that only refresh last-seen
	// times or drop dependencies (default 10s). New dependencies are
	// persisted at the next flush, before the Sidecar that needs them.
	PersistInterval time.Duration
	// WorkloadGracePeriod keeps a workload with no pods (scaled to zero,
	// Recreate rollout) with its dependencies and Sidecar (default 10m).
	WorkloadGracePeriod time.Duration
	// Registry receives the loop's metrics (nil: not registered).
	Registry prometheus.Registerer
	Recorder events.EventRecorder
	Logger   logr.Logger
}

func (o Options) withDefaults() Options {
	if o.ALSAddress == "" {
		o.ALSAddress = ":15014"
	}
	if o.ConfigMapName == "" {
		o.ConfigMapName = DefaultConfigMapName
	}
	if o.RootNamespace == "" {
		o.RootNamespace = "istio-system"
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = "cluster.local"
	}
	if o.Namespace == "" {
		o.Namespace = "leanmesh-system"
	}
	if o.ALSHost == "" {
		o.ALSHost = "leanmesh-controller." + o.Namespace + ".svc." + o.ClusterDomain
	}
	if o.ALSPort == 0 {
		addr := o.ALSAddress
		if o.ALSListener != nil {
			addr = o.ALSListener.Addr().String()
		}
		if _, p, err := net.SplitHostPort(addr); err == nil {
			if n, err := strconv.ParseUint(p, 10, 16); err == nil {
				o.ALSPort = uint32(n)
			}
		}
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = time.Second
	}
	if o.PersistInterval <= 0 {
		o.PersistInterval = 10 * time.Second
	}
	if o.WorkloadGracePeriod <= 0 {
		o.WorkloadGracePeriod = 10 * time.Minute
	}
	if o.Logger.GetSink() == nil {
		o.Logger = ctrl.Log.WithName("lazyxds")
	}
	return o
}

// wlState is the loop's view of one workload.
type wlState struct {
	pods       map[string]podFacts // by pod name
	labels     map[string]string
	emptySince time.Time // no pods since then; deleted after the grace period
	policy     types.NamespacedName
	conflict   string // user Sidecar selecting it ("" none)
}

func (w *wlState) lazy() bool { return w.policy.Name != "" && w.conflict == "" }

// Loop is the lazy-xDS controller. Create it with Setup.
type Loop struct {
	opts    Options
	c       client.Client
	api     client.Reader
	mgr     ctrl.Manager
	graph   *lazyxds.Graph
	als     *als.Server
	metrics *metrics
	egress  lazyxds.Egress // controller-wide egress settings; policies pick namespace/name

	mu           sync.Mutex
	pods         map[types.NamespacedName]podFacts
	workloads    map[lazyxds.WorkloadKey]*wlState
	policies     map[types.NamespacedName]*v1alpha1.LazyXDS
	refused      map[types.NamespacedName]*v1alpha1.LazyXDS  // egress namespace not allowed: status only
	userSidecars map[string]map[string]*networkingv1.Sidecar // ns → name
	seByHost     map[string]map[types.NamespacedName]lazyxds.Service
	seHosts      map[types.NamespacedName][]string
	infraDirty   bool // policies, services or ServiceEntries changed: re-render redirects/egress
	statusDirty  bool
	seeds        map[types.NamespacedName]*seedState // seedFromTelemetry per policy
	vsObjects    map[types.NamespacedName]*networkingv1.VirtualService
	seedDone     chan seedOutcome

	// Flush-goroutine state (no lock needed).
	persisted     map[lazyxds.WorkloadKey]map[string]bool // host → seeded (origin telemetry)
	persistedRaw  []byte
	lastPersist   time.Time
	applied       map[lazyxds.WorkloadKey]map[string]struct{} // hosts of deps in the last Sidecar written
	infraApplied  map[string]infraObject                      // "<Kind>/<ns>/<name>" → last write
	policyRun     map[types.NamespacedName]*policyRuntime
	started       time.Time
	ready         chan struct{}
	persistFailed string
	routing       routingFacts // egress-bound VirtualService copies, for status
	simulateKill  atomic.Bool  // tests: stop like SIGKILL, without the final snapshot write
}

// Setup builds the loop, registers its metrics and adds it to mgr (it runs
// on the leader only).
func Setup(mgr ctrl.Manager, opts Options) (*Loop, error) {
	opts = opts.withDefaults()
	l := &Loop{
		opts: opts, c: mgr.GetClient(), api: mgr.GetAPIReader(), mgr: mgr,
		graph: lazyxds.NewGraph(lazyxds.Options{
			ClusterDomain: opts.ClusterDomain,
			RootNamespace: opts.RootNamespace,
			// Each policy adds its own egress host; "<root>/*" is already in
			// every Sidecar, so this collapses into it.
			EgressHost: opts.RootNamespace + "/*",
		}),
		egress:       lazyxds.Egress{ClusterDomain: opts.ClusterDomain, ALSHost: opts.ALSHost, ALSPort: opts.ALSPort, Revision: opts.IstioRevision, ALSServerIdentity: alsServerIdentity(opts)},
		pods:         map[types.NamespacedName]podFacts{},
		workloads:    map[lazyxds.WorkloadKey]*wlState{},
		policies:     map[types.NamespacedName]*v1alpha1.LazyXDS{},
		refused:      map[types.NamespacedName]*v1alpha1.LazyXDS{},
		userSidecars: map[string]map[string]*networkingv1.Sidecar{},
		seByHost:     map[string]map[types.NamespacedName]lazyxds.Service{},
		seHosts:      map[types.NamespacedName][]string{},
		persisted:    map[lazyxds.WorkloadKey]map[string]bool{},
		seeds:        map[types.NamespacedName]*seedState{},
		vsObjects:    map[types.NamespacedName]*networkingv1.VirtualService{},
		seedDone:     make(chan seedOutcome, 16),
		applied:      map[lazyxds.WorkloadKey]map[string]struct{}{},
		infraApplied: map[string]infraObject{},
		policyRun:    map[types.NamespacedName]*policyRuntime{},
		ready:        make(chan struct{}),
		metrics:      newMetrics(),
	}
	if !opts.ALSPlaintext && opts.ALSMeshRootFile == "" {
		return nil, errors.New("lazyxds ALS: a mesh root certificate (ALSMeshRootFile) is required to authenticate the egress, or ALSPlaintext for tests")
	}
	alsOpts := opts.ALSLimits
	// Refusals are counted in metrics; logs get the first few and then one
	// per interval, so a flood cannot fill the controller's log.
	refuseLog := &rate.Sometimes{First: 5, Interval: 10 * time.Second}
	alsOpts.OnRefuse = func(r als.Refusal, detail string) {
		refuseLog.Do(func() {
			l.opts.Logger.Info("ALS caller refused (later refusals are logged at most every 10s; see leanmesh_lazyxds_als_refused_total)",
				"reason", r.String(), "detail", detail)
		})
	}
	if !opts.ALSPlaintext {
		alsOpts.Authorize = l.authorizeALS
	}
	l.als = als.NewServer(l.graph, alsOpts)
	if opts.Registry != nil {
		for _, c := range []prometheus.Collector{l.graph.Collector(), l.als.Collector(), l.metrics} {
			if err := opts.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("lazyxds metrics: %w", err)
			}
		}
	}
	if err := mgr.Add(l); err != nil {
		return nil, err
	}
	return l, nil
}

// Graph exposes the dependency graph (tests, debugging).
func (l *Loop) Graph() *lazyxds.Graph { return l.graph }

// ALS exposes the access-log server (stats).
func (l *Loop) ALS() *als.Server { return l.als }

// Ready is closed once the snapshot is restored, informers have synced and
// the ALS listener is open.
func (l *Loop) Ready() <-chan struct{} { return l.ready }

// NeedLeaderElection: one writer of Sidecars and of the snapshot.
func (l *Loop) NeedLeaderElection() bool { return true }

var _ manager.LeaderElectionRunnable = (*Loop)(nil)

// Start runs the loop until ctx ends (manager.Runnable).
func (l *Loop) Start(ctx context.Context) error {
	log := l.opts.Logger
	l.started = time.Now()
	// 1. Restore before any informer event: dependencies of workloads and
	// services not seen yet wait in the graph until they appear.
	n, err := l.restore(ctx)
	if err != nil {
		return err
	}
	// 2. Informers.
	regs, err := l.watch(ctx)
	if err != nil {
		return err
	}
	if err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(context.Context) (bool, error) {
		for _, r := range regs {
			if !r.HasSynced() {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		return nil // cancelled while syncing
	}
	// 3. Everything known now: forget what was deleted while we were down,
	// and our objects nothing wants any more.
	dropped := l.graph.DropUnknown()
	if err := l.collectGarbage(ctx); err != nil {
		log.Error(err, "removing stale lazy-xDS objects")
	}
	log.Info("lazy-xDS loop synced", "restoredDependencies", n, "droppedUnknown", dropped, "in", time.Since(l.started).Round(time.Millisecond))

	// 4. ALS after sync, so no caller is unknown because its pod was not listed yet.
	lis := l.opts.ALSListener
	if lis == nil {
		if lis, err = net.Listen("tcp", l.opts.ALSAddress); err != nil {
			return fmt.Errorf("lazyxds ALS: %w", err)
		}
	}
	var srvOpts []grpc.ServerOption
	if !l.opts.ALSPlaintext {
		m := &als.MeshTLS{RootFile: l.opts.ALSMeshRootFile, CertFile: l.opts.ALSCertFile, KeyFile: l.opts.ALSKeyFile,
			OnReject: func(r als.Refusal) { l.als.Refuse(r, "TLS handshake") }}
		if c := l.opts.ALSIstioCert; c != nil {
			// Without a certificate every handshake fails: say so, at a bounded rate.
			certLog := &rate.Sometimes{First: 3, Interval: time.Minute}
			c.OnError = func(err error, serving bool) {
				certLog.Do(func() {
					msg := "ALS server certificate from Istio's CA failed: ALS handshakes fail until it is issued"
					if serving {
						msg = "ALS server certificate renewal from Istio's CA failed: the current one is served until it expires"
					}
					l.opts.Logger.Error(err, msg, "ca", c.CAAddress, "identity", c.Identity)
				})
			}
			m.ServerCert = c.GetCertificate
		}
		creds, err := m.Credentials()
		if err != nil {
			return fmt.Errorf("lazyxds ALS: %w", err)
		}
		srvOpts = append(srvOpts, grpc.Creds(creds))
	}
	srv := l.als.NewGRPCServer(srvOpts...)
	alsCtx, stopALS := context.WithCancel(ctx)
	defer stopALS()
	go l.als.Run(alsCtx)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(l.als.Listener(lis)) }()
	defer srv.Stop() // ALS streams never end on their own: no GracefulStop
	close(l.ready)

	// 5. Flush loop.
	t := time.NewTicker(l.opts.FlushInterval)
	defer t.Stop()
	for {
		l.flush(ctx)
		select {
		case <-ctx.Done():
			if !l.simulateKill.Load() {
				// Persist refresh-only changes too; acknowledged ones already are.
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_ = l.persist(sctx)
				cancel()
			}
			return nil
		case err := <-serveErr:
			if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				return fmt.Errorf("lazyxds ALS: %w", err)
			}
			return nil
		case <-t.C:
		}
	}
}

// egressRefusal says why a policy's egress namespace is not one the
// controller may write in ("" when it is).
func (l *Loop) egressRefusal(p *v1alpha1.LazyXDS) string {
	ns, _ := EgressOf(p, l.egress).ServiceAccount()
	if len(l.opts.EgressNamespaces) == 0 || slices.Contains(l.opts.EgressNamespaces, ns) {
		return ""
	}
	return fmt.Sprintf("spec.egress.namespace %q is not a lazy-egress namespace of this controller (%s: --lazyxds-egress-namespaces, chart value lazyXDS.egressNamespaces, which also grants the writes there); nothing of this policy is applied",
		ns, strings.Join(l.opts.EgressNamespaces, ", "))
}

// authorizeALS admits the identity of an egress some LazyXDS uses.
func (l *Loop) authorizeALS(id als.Identity) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.policies {
		ns, sa := EgressOf(p, l.egress).ServiceAccount()
		if id.Namespace == ns && id.ServiceAccount == sa {
			return true
		}
	}
	return false
}

// watch registers the informer handlers and returns their registrations,
// whose HasSynced says when the initial list has been fed to the graph.
func (l *Loop) watch(ctx context.Context) ([]toolscache.ResourceEventHandlerRegistration, error) {
	type watched struct {
		obj client.Object
		fn  func(obj any, deleted bool)
	}
	var regs []toolscache.ResourceEventHandlerRegistration
	for _, w := range []watched{
		// Policies first: pods arriving later are assigned at once.
		{&v1alpha1.LazyXDS{}, l.onPolicy},
		{&networkingv1.Sidecar{}, l.onSidecar},
		{&corev1.Service{}, l.onService},
		{&networkingv1.ServiceEntry{}, l.onServiceEntry},
		{&networkingv1.VirtualService{}, l.onVirtualService},
		{&corev1.Pod{}, l.onPod},
	} {
		inf, err := l.mgr.GetCache().GetInformer(ctx, w.obj)
		if err != nil {
			return nil, fmt.Errorf("informer for %T: %w", w.obj, err)
		}
		fn := w.fn
		reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { fn(o, false) },
			UpdateFunc: func(_, o any) { fn(o, false) },
			DeleteFunc: func(o any) {
				if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
					o = d.Obj
				}
				fn(o, true)
			},
		})
		if err != nil {
			return nil, err
		}
		regs = append(regs, reg)
	}
	return regs, nil
}

// alsServerIdentity is the identity the egress must see on the ALS server:
// the controller's, when its certificate comes from Istio's CA.
func alsServerIdentity(o Options) string {
	if o.ALSIstioCert == nil || o.ALSPlaintext {
		return ""
	}
	return o.ALSIstioCert.Identity
}
