package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/leanmesh/leanmesh/controller/lazyxds/als"
	"github.com/leanmesh/leanmesh/controller/lazyxdsctl"
)

// lazyXDSFlags are the loop's command-line settings.
type lazyXDSFlags struct {
	enabled         *bool
	alsAddr         *string
	alsMeshRoot     *string
	alsCert         *string
	alsKey          *string
	alsIstioCA      *string
	alsCAName       *string
	alsToken        *string
	alsIdentity     *string
	alsPlaintext    *bool
	alsMaxStreams   *int
	alsHost         *string
	configMap       *string
	clusterDomain   *string
	flushInterval   *time.Duration
	persistInterval *time.Duration
	gracePeriod     *time.Duration
	egressNS        *string
}

func addLazyXDSFlags(fs *flag.FlagSet) *lazyXDSFlags {
	return &lazyXDSFlags{
		enabled:     fs.Bool("lazyxds", false, "run the lazy-xDS loop (needs the LazyXDS CRD and Istio's networking CRDs)"),
		alsAddr:     fs.String("lazyxds-als-address", ":15014", "address of the lazy-xDS AccessLogService (gRPC, mutual TLS)"),
		alsMeshRoot: fs.String("lazyxds-als-mesh-root", "", "Istio's root certificate (PEM, the istio-ca-root-cert ConfigMap): ALS callers must present a workload certificate it signed, for a lazy egress's service account"),
		alsCert:     fs.String("lazyxds-als-tls-cert", "", "ALS server certificate (PEM) when --lazyxds-als-istio-ca is not used (default: self-signed at start; the egress then does not verify the server)"),
		alsKey:      fs.String("lazyxds-als-tls-key", "", "private key of --lazyxds-als-tls-cert"),
		alsIstioCA: fs.String("lazyxds-als-istio-ca", "",
			"Istio's CA (istiod's :15012, e.g. istiod.istio-system.svc:15012): the ALS server certificate is issued there for --lazyxds-als-identity, and the lazy egress verifies that identity"),
		alsCAName:   fs.String("lazyxds-als-istio-ca-server-name", "", "name istiod's serving certificate is checked for (default: the host of --lazyxds-als-istio-ca)"),
		alsToken:    fs.String("lazyxds-als-istio-token", "/var/run/secrets/tokens/istio-token", "service-account token for audience istio-ca that authenticates the certificate request"),
		alsIdentity: fs.String("lazyxds-als-identity", "", "the controller's SPIFFE ID (spiffe://<trust domain>/ns/<namespace>/sa/<service account>), required with --lazyxds-als-istio-ca"),
		alsPlaintext: fs.Bool("lazyxds-als-plaintext", false,
			"serve ALS without TLS and admit any caller: anyone reaching the port can forge dependencies (tests only)"),
		alsMaxStreams:   fs.Int("lazyxds-als-max-streams", 0, "concurrent ALS streams admitted (default 64: one per egress worker thread)"),
		alsHost:         fs.String("lazyxds-als-host", "", "host the lazy egress dials for access logs (default leanmesh-controller.$POD_NAMESPACE.svc.<domain>)"),
		configMap:       fs.String("lazyxds-configmap", lazyxdsctl.DefaultConfigMapName, "ConfigMap in the controller's namespace holding learned dependencies"),
		clusterDomain:   fs.String("lazyxds-cluster-domain", "cluster.local", "Kubernetes cluster DNS domain (Sidecar hosts, redirect)"),
		flushInterval:   fs.Duration("lazyxds-flush-interval", time.Second, "how often learned dependencies are written to Sidecars"),
		persistInterval: fs.Duration("lazyxds-persist-interval", 10*time.Second, "at most how often last-seen refreshes are persisted (new dependencies are persisted before their Sidecar)"),
		gracePeriod:     fs.Duration("lazyxds-workload-grace-period", 10*time.Minute, "how long a workload without pods keeps its dependencies"),
		egressNS: fs.String("lazyxds-egress-namespaces", "istio-system",
			"comma-separated namespaces the lazy egress may be written in (its Deployment, Service, ServiceAccount and Gateway; the chart grants those writes there only); a LazyXDS naming another is not applied and says so in its status"),
	}
}

// setupLazyXDS registers the loop with the manager when enabled.
func setupLazyXDS(mgr ctrl.Manager, f *lazyXDSFlags, rootNS, revision string) error {
	if !*f.enabled {
		return nil
	}
	ns := os.Getenv("POD_NAMESPACE")
	var egressNS []string
	for _, n := range strings.Split(*f.egressNS, ",") {
		if n = strings.TrimSpace(n); n != "" {
			egressNS = append(egressNS, n)
		}
	}
	if len(egressNS) == 0 {
		return errors.New("--lazyxds-egress-namespaces: name at least one namespace the lazy egress may be written in")
	}
	var istioCert *als.IstioCert
	if *f.alsIstioCA != "" {
		if *f.alsCert != "" || *f.alsPlaintext {
			return errors.New("--lazyxds-als-istio-ca contradicts --lazyxds-als-tls-cert and --lazyxds-als-plaintext")
		}
		if *f.alsIdentity == "" {
			return errors.New("--lazyxds-als-istio-ca needs --lazyxds-als-identity (the controller's SPIFFE ID)")
		}
		if _, err := als.ParseSPIFFE(*f.alsIdentity); err != nil {
			return fmt.Errorf("--lazyxds-als-identity: %w", err)
		}
		istioCert = &als.IstioCert{CAAddress: *f.alsIstioCA, CAServerName: *f.alsCAName, RootFile: *f.alsMeshRoot,
			TokenFile: *f.alsToken, Identity: *f.alsIdentity}
	}
	_, err := lazyxdsctl.Setup(mgr, lazyxdsctl.Options{
		ALSAddress:          *f.alsAddr,
		ALSMeshRootFile:     *f.alsMeshRoot,
		ALSCertFile:         *f.alsCert,
		ALSKeyFile:          *f.alsKey,
		ALSIstioCert:        istioCert,
		ALSPlaintext:        *f.alsPlaintext,
		ALSLimits:           als.Options{MaxStreams: *f.alsMaxStreams},
		ALSHost:             *f.alsHost,
		Namespace:           ns,
		ConfigMapName:       *f.configMap,
		RootNamespace:       rootNS,
		IstioRevision:       revision,
		EgressNamespaces:    egressNS,
		ClusterDomain:       *f.clusterDomain,
		FlushInterval:       *f.flushInterval,
		PersistInterval:     *f.persistInterval,
		WorkloadGracePeriod: *f.gracePeriod,
		Registry:            metrics.Registry,
		Recorder:            mgr.GetEventRecorder("leanmesh-lazyxds"),
		Logger:              mgr.GetLogger().WithName("lazyxds"),
	})
	return err
}
