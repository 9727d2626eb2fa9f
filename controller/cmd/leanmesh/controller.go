package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	istioscheme "istio.io/client-go/pkg/clientset/versioned/scheme"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/install"
	"github.com/leanmesh/leanmesh/controller/metricsserving"
	"github.com/leanmesh/leanmesh/controller/proxystatus"
	"github.com/leanmesh/leanmesh/controller/release"
	"github.com/leanmesh/leanmesh/controller/render"
	"github.com/leanmesh/leanmesh/controller/workloadtable"
)

// Leader election (--leader-elect), in the controller's namespace (the chart
// grants it there). Each feature's own permissions sit in its package
// (controller/install, controller/lazyxdsctl, controller/workloadtable):
// `make generate` writes one config/rbac/<feature>/role.yaml per package.
// client-go's LeaseLock gets, creates and updates the Lease (release on
// cancel is an update) and records "became leader" as a core/v1 Event.
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;create;update,namespace=leanmesh-system
// +kubebuilder:rbac:groups="",resources=events,verbs=create,namespace=leanmesh-system

func runController(args []string) int {
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	metricsAddr := fs.String("metrics-bind-address", ":8443", "address of the Prometheus /metrics endpoint (\"0\" disables it)")
	metricsSecure := fs.Bool("metrics-secure", true, "serve /metrics over HTTPS, authenticating and authorizing each scrape with the API server (false: plain HTTP, unauthenticated)")
	metricsCertDir := fs.String("metrics-cert-dir", "", "directory with tls.crt and tls.key for /metrics (default: a self-signed certificate)")
	probeAddr := fs.String("health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	leaderElect := fs.Bool("leader-elect", true, "elect a leader so only one replica reconciles")
	leaderNS := fs.String("leader-election-namespace", os.Getenv("POD_NAMESPACE"), "namespace of the leader-election Lease (default: $POD_NAMESPACE)")
	leaderID := fs.String("leader-election-id", "leanmesh-controller.leanmesh.io", "name of the leader-election Lease")
	rootNS := fs.String("root-namespace", "istio-system", "Istio's config root namespace: policies there are mesh-wide")
	revision := fs.String("istio-revision", "", "istiod revision (istio.io/rev) for policies without spec.istioRevision and for the lazy egress's injection; empty: the default revision")
	matrixPath := fs.String("matrix", "", "version matrix file (default: the envoy-build/versions.tsv compiled in)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig (default: in-cluster, then $KUBECONFIG)")
	logFormat := fs.String("log-format", "json", "log format: json or text")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	libraryPath := fs.String("library-path", envOr("LEANMESH_LIBRARY_PATH", render.DefaultLibraryPath),
		"where the library install puts leanmesh.so (the chart's library.path); policies loading it from elsewhere are refused")
	istiodDebug := fs.String("istiod-debug-url", "",
		"comma-separated istiod debug bases (one per revision, e.g. http://istiod.istio-system.svc:15014) whose /debug/syncz reports each proxy's listener ACK/NACK and version; empty: ConfigAccepted stays Unknown")
	istiodToken := fs.String("istiod-token-path", "",
		"service-account token (audience istio-ca) sent to istiod's debug endpoint; istiod must allow this namespace (DEBUG_ENDPOINT_AUTH_ALLOWED_NAMESPACES)")
	proxyPoll := fs.Duration("proxy-status-interval", 2*time.Second, "how often istiod's /debug/syncz is read")
	shutdown := fs.Duration("graceful-shutdown-timeout", 30*time.Second, "how long in-flight reconciles may run after SIGTERM")
	wtFlags := workloadTableFlagSet(fs)
	lazyFlags := addLazyXDSFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}

	logger, err := newLogger(*logFormat, *logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "leanmesh controller:", err)
		return 2
	}
	ctrl.SetLogger(logger)
	klog.SetLogger(logger)
	setupLog := logger.WithName("setup")

	matrix := release.Embedded()
	if *matrixPath != "" {
		f, err := os.Open(*matrixPath)
		if err != nil {
			setupLog.Error(err, "opening version matrix")
			return 1
		}
		matrix, err = release.Parse(f)
		f.Close()
		if err != nil {
			setupLog.Error(err, "parsing version matrix")
			return 1
		}
	}

	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, istioscheme.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			setupLog.Error(err, "building scheme")
			return 1
		}
	}
	if *kubeconfig != "" {
		os.Setenv("KUBECONFIG", *kubeconfig)
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		setupLog.Error(err, "loading kubeconfig")
		return 1
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Cache:                         install.CacheOptions(),
		Metrics:                       metricsserving.Config{BindAddress: *metricsAddr, Secure: *metricsSecure, CertDir: *metricsCertDir}.Options(),
		HealthProbeBindAddress:        *probeAddr,
		LeaderElection:                *leaderElect,
		LeaderElectionID:              *leaderID,
		LeaderElectionNamespace:       *leaderNS,
		LeaderElectionReleaseOnCancel: true, // hand over at once on rollout
		GracefulShutdownTimeout:       shutdown,
	})
	if err != nil {
		setupLog.Error(err, "creating manager")
		return 1
	}
	ctx := ctrl.SetupSignalHandler()
	r := &install.Reconciler{
		Client:        mgr.GetClient(),
		APIReader:     mgr.GetAPIReader(),
		Scheme:        mgr.GetScheme(),
		Recorder:      mgr.GetEventRecorder("leanmesh-controller"),
		RootNamespace: *rootNS,
		IstioRevision: *revision,
		Matrix:        matrix,
		Metrics:       install.NewMetrics(metrics.Registry),
		LibraryPaths:  []string{*libraryPath},
	}
	if *istiodDebug != "" {
		r.Proxies = &proxystatus.Poller{URLs: strings.Split(*istiodDebug, ","), TokenPath: *istiodToken,
			Interval: *proxyPoll, Log: logger.WithName("proxystatus")}
	}
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		setupLog.Error(err, "setting up the TelemetryPolicy controller")
		return 1
	}
	if wtOpts, enabled, err := wtFlags.options(); err != nil {
		setupLog.Error(err, "workload table flags")
		return 2
	} else if enabled {
		if _, err := workloadtable.Setup(mgr, wtOpts); err != nil {
			setupLog.Error(err, "setting up the workload table")
			return 1
		}
		setupLog.Info("serving the workload table", "address", wtOpts.Address, "clusterID", wtOpts.ClusterID,
			"tls", wtOpts.TLS != nil, "workloadEntries", wtOpts.WorkloadEntries)
	}
	if err := setupLazyXDS(mgr, lazyFlags, *rootNS, *revision); err != nil {
		setupLog.Error(err, "setting up the lazy-xDS loop")
		return 1
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		setupLog.Error(err, "adding healthz")
		return 1
	}
	// Ready once the informers have synced: before that, reconciles would
	// read an empty cache.
	if err := mgr.AddReadyzCheck("cache-synced", func(req *http.Request) error {
		if !mgr.GetCache().WaitForCacheSync(req.Context()) {
			return fmt.Errorf("cache not synced")
		}
		return nil
	}); err != nil {
		setupLog.Error(err, "adding readyz")
		return 1
	}
	def := matrix.Default()
	setupLog.Info("starting", "version", version, "rootNamespace", *rootNS, "leaderElection", *leaderElect,
		"defaultIstio", def.Istio, "defaultEnvoy", def.Envoy)
	if err := mgr.Start(ctx); err != nil {
		setupLog.Error(err, "manager stopped")
		return 1
	}
	setupLog.Info("stopped")
	return 0
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// newLogger builds a structured logr.Logger on log/slog.
func newLogger(format, level string) (logr.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return logr.Logger{}, fmt.Errorf("--log-level: %v", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	switch format {
	case "json":
		h = slog.NewJSONHandler(os.Stderr, opts)
	case "text":
		h = slog.NewTextHandler(os.Stderr, opts)
	default:
		return logr.Logger{}, fmt.Errorf("--log-format: %q is not json or text", format)
	}
	return logr.FromSlogHandler(h), nil
}
