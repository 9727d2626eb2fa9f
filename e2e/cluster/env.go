// Package cluster runs a real Kubernetes + Istio control plane on loopback for
// end-to-end tests: etcd and kube-apiserver (through controller-runtime
// envtest, on binaries built from source by build-binaries.sh), Istio's CRDs,
// pilot-discovery (istiod), API-object workloads, and an ADS client that
// observes the xDS config istiod would push to a sidecar.
//
// No kubelet or controllers run: pods, endpoints and their status are written
// directly as API objects, which is all istiod needs to compute sidecar config.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	istioscheme "istio.io/client-go/pkg/clientset/versioned/scheme"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// SkipEnvVar skips cluster tests explicitly (and loudly) when set to "1".
const SkipEnvVar = "LEANMESH_SKIP_CLUSTER"

// Options configures Start.
type Options struct {
	// CRDPaths are extra CRD files or directories installed after Istio's
	// (e.g. leanmesh's config/crd). A missing path is an error.
	CRDPaths []string
	// Scheme registers extra types for Env.Client; Kubernetes built-ins,
	// apiextensions and all istio.io/client-go types are always added.
	Scheme func(*runtime.Scheme) error
	// WorkDir holds logs, certs, etcd data and kubeconfigs. Default: a new
	// temp dir, removed by Stop unless KeepWorkDir (a given WorkDir is kept).
	WorkDir     string
	KeepWorkDir bool
	// Progress receives build-script output and lifecycle messages.
	// Default: os.Stderr (a cold build is ~16 min; it must be visible live).
	Progress io.Writer
	// StartTimeout bounds each of etcd and kube-apiserver start. Default 90s
	// (2-core CI machines under load are slow to bring up the apiserver).
	StartTimeout time.Duration
	// Audit makes kube-apiserver write every request's metadata to
	// Dir/audit.log (read with Env.AuditEvents): what a client really asked
	// for, as the apiserver resolved and authorized it.
	Audit bool
	// AdmissionPlugins are enabled in addition to the apiserver's defaults
	// (e.g. OwnerReferencesPermissionEnforcement, which many distributions
	// turn on and which checks a permission no request names).
	AdmissionPlugins []string
}

// Env is a running etcd + kube-apiserver with Istio's CRDs installed.
type Env struct {
	// Config is an admin (system:masters) rest.Config.
	Config *rest.Config
	// Client has Kubernetes, apiextensions and istio.io/client-go types.
	Client client.Client
	Scheme *runtime.Scheme
	// Kubeconfig is a file other processes (istiod, kubectl) can use.
	Kubeconfig string
	// Dir is the work directory (logs: kube-apiserver.log, etcd.log, istiod-*/istiod.log).
	Dir      string
	Binaries Binaries

	opts     Options
	ownDir   bool // Dir was created by Start, so Stop may delete it
	testEnv  *envtest.Environment
	progress io.Writer

	mu      sync.Mutex
	istiods []*Istiod
	stopped bool
	logs    []*os.File
}

// Start builds missing binaries (streaming progress), starts etcd and
// kube-apiserver on 127.0.0.1, installs Istio's CRDs plus opts.CRDPaths and
// returns a ready Env. Call Stop (or use StartT) to tear it down. ctx bounds
// the build only: envtest's start has its own timeouts (StartTimeout).
func Start(ctx context.Context, opts Options) (_ *Env, retErr error) {
	if opts.Progress == nil {
		opts.Progress = os.Stderr
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 90 * time.Second
	}
	bins, err := EnsureBinaries(ctx, opts.Progress)
	if err != nil {
		return nil, err
	}

	dir, ownDir := opts.WorkDir, opts.WorkDir == ""
	if ownDir {
		if dir, err = os.MkdirTemp("", "leanmesh-env-"); err != nil {
			return nil, err
		}
	} else if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	e := &Env{Dir: dir, ownDir: ownDir, Binaries: bins, opts: opts, progress: opts.Progress}
	defer func() {
		if retErr != nil {
			retErr = errors.Join(retErr, e.Stop())
		}
	}()

	e.Scheme = runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, istioscheme.AddToScheme, opts.Scheme} {
		if add == nil {
			continue
		}
		if err := add(e.Scheme); err != nil {
			return nil, fmt.Errorf("building scheme: %w", err)
		}
	}

	// Wrapped binaries die with the test process; see deathsigWrapper.
	binDir := filepath.Join(dir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return nil, err
	}
	apiserverBin, err := deathsigWrapper(binDir, "kube-apiserver", bins.KubeAPIServer)
	if err != nil {
		return nil, err
	}
	etcdBin, err := deathsigWrapper(binDir, "etcd", bins.Etcd)
	if err != nil {
		return nil, err
	}
	if bins.Kubectl != "" {
		_ = os.Symlink(bins.Kubectl, filepath.Join(binDir, "kubectl"))
	}

	apiLog, err := e.logFile("kube-apiserver.log")
	if err != nil {
		return nil, err
	}
	etcdLog, err := e.logFile("etcd.log")
	if err != nil {
		return nil, err
	}

	crdPaths := append([]string{bins.IstioCRDs}, opts.CRDPaths...)
	e.testEnv = &envtest.Environment{
		BinaryAssetsDirectory: binDir,
		CRDDirectoryPaths:     crdPaths,
		ErrorIfCRDPathMissing: true,
		// envtest waits 10 s by default for the CRDs to be Established; on
		// a loaded 2-core machine that ran out (TestIstiodFilterLayoutPerMode).
		CRDInstallOptions:        envtest.CRDInstallOptions{MaxTime: 2 * time.Minute},
		Scheme:                   e.Scheme,
		ControlPlaneStartTimeout: opts.StartTimeout,
		ControlPlaneStopTimeout:  60 * time.Second,
		ControlPlane: envtest.ControlPlane{
			// Data and cert dirs inside Dir put Dir on both command lines,
			// which is how Stop finds anything left behind (see sweep).
			Etcd: &envtest.Etcd{Path: etcdBin, DataDir: filepath.Join(dir, "etcd-data"), Out: etcdLog, Err: etcdLog},
			APIServer: &envtest.APIServer{
				Path:    apiserverBin,
				CertDir: filepath.Join(dir, "apiserver-certs"),
				Out:     apiLog,
				Err:     apiLog,
			},
		},
	}
	// envtest's default service range is a /24: too small for the scale
	// benchmark's 1,000+ Services.
	e.testEnv.ControlPlane.APIServer.Configure().Set("service-cluster-ip-range", "10.96.0.0/16")
	if opts.Audit {
		if err := e.configureAudit(); err != nil {
			return nil, err
		}
	}
	if len(opts.AdmissionPlugins) > 0 {
		e.testEnv.ControlPlane.APIServer.Configure().Set("enable-admission-plugins", strings.Join(opts.AdmissionPlugins, ","))
	}
	for _, d := range []string{e.testEnv.ControlPlane.Etcd.DataDir, e.testEnv.ControlPlane.APIServer.CertDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}

	start := time.Now()
	e.logf("starting etcd (%s) and kube-apiserver %s in %s", bins.Etcd, KubernetesVersion, dir)
	cfg, err := e.testEnv.Start()
	if err != nil {
		return nil, fmt.Errorf("envtest start: %w\n--- kube-apiserver.log tail ---\n%s\n--- etcd.log tail ---\n%s",
			err, tailFile(apiLog.Name(), 30), tailFile(etcdLog.Name(), 15))
	}
	e.Config = cfg
	e.logf("control plane up at %s with %d CRDs in %s", cfg.Host, len(e.testEnv.CRDs), time.Since(start).Round(time.Millisecond))

	// A dedicated system:masters user for out-of-process consumers.
	user, err := e.testEnv.AddUser(envtest.User{Name: "leanmesh-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, fmt.Errorf("adding kubeconfig user: %w", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return nil, err
	}
	e.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(e.Kubeconfig, kc, 0o600); err != nil {
		return nil, err
	}

	if e.Client, err = client.New(cfg, client.Options{Scheme: e.Scheme}); err != nil {
		return nil, err
	}
	return e, nil
}

// StartT is Start for tests: honours LEANMESH_SKIP_CLUSTER=1 (explicit skip),
// fails the test with the reason otherwise, and registers cleanup that dumps
// log tails when the test failed and then stops everything.
func StartT(t testing.TB, opts Options) *Env {
	t.Helper()
	if os.Getenv(SkipEnvVar) == "1" {
		t.Skipf("%s=1: skipping real control-plane test (etcd/kube-apiserver/istiod)", SkipEnvVar)
	}
	// A cold build (~16 min on 2 cores) outlives go test's default 10m
	// timeout; fail fast with the fix instead of a timeout panic mid-build.
	if m := CachedBinaries().Missing(); len(m) > 0 {
		if dl, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
			if d, ok := dl.Deadline(); ok && time.Until(d) < 30*time.Minute {
				t.Fatalf("control-plane binaries not built (%s) and the test deadline is in %s, too short for a ~16 min cold build: "+
					"run e2e/cluster/build-binaries.sh first or use go test -timeout 45m",
					strings.Join(m, ", "), time.Until(d).Round(time.Second))
			}
		}
	}
	e, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("starting real control plane: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			e.opts.KeepWorkDir = true
			t.Logf("test failed; keeping %s", e.Dir)
			e.mu.Lock()
			istiods := append([]*Istiod(nil), e.istiods...)
			e.mu.Unlock()
			for _, i := range istiods {
				t.Logf("--- %s tail ---\n%s", i.LogPath, i.LogTail(60))
			}
			t.Logf("--- kube-apiserver.log tail ---\n%s", tailFile(filepath.Join(e.Dir, "kube-apiserver.log"), 20))
		}
		if err := e.Stop(); err != nil {
			t.Errorf("stopping control plane: %v", err)
		}
	})
	return e
}

// Stop stops istiod(s), then kube-apiserver, then etcd (envtest's order:
// the apiserver takes ~40s to exit if etcd goes first), kills anything still
// running from this Env and removes Dir unless KeepWorkDir. Idempotent.
func (e *Env) Stop() error {
	e.mu.Lock()
	if e.stopped {
		e.mu.Unlock()
		return nil
	}
	e.stopped = true
	istiods := e.istiods
	e.mu.Unlock()

	var errs []error
	for _, i := range istiods {
		if err := i.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if e.testEnv != nil {
		if err := e.testEnv.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("envtest stop: %w", err))
		}
	}
	if left := e.sweep(); len(left) > 0 {
		errs = append(errs, fmt.Errorf("killed leftover processes %v", left))
	}
	for _, f := range e.logs {
		f.Close()
	}
	if e.ownDir && !e.opts.KeepWorkDir {
		if err := os.RemoveAll(e.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Processes returns PIDs of live processes whose command line mentions Dir:
// etcd (data dir), kube-apiserver (cert dir) and istiod (kubeconfig).
func (e *Env) Processes() []int {
	if e.Dir == "" {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var pids []int
	self := os.Getpid()
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == self {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Contains(string(cmdline), e.Dir+string(filepath.Separator)) && !isZombie(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// state follows the ")" closing the command name.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z'
	}
	return false
}

// sweep SIGKILLs whatever Processes still finds (a stop that timed out).
func (e *Env) sweep() []int {
	left := e.Processes()
	for _, pid := range left {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return left
}

func (e *Env) logFile(name string) (*os.File, error) {
	f, err := os.Create(filepath.Join(e.Dir, name))
	if err != nil {
		return nil, err
	}
	e.logs = append(e.logs, f)
	return f, nil
}

func (e *Env) logf(format string, args ...any) {
	fmt.Fprintf(e.progress, "e2e/cluster: "+format+"\n", args...)
}
