package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultMeshConfig is the MeshConfig istiod runs with unless overridden:
// Istio's install defaults that matter for sidecar config (prometheus
// telemetry via the Telemetry API default provider, metrics merging,
// auto mTLS, ALLOW_ANY egress), with the root namespace istio-system.
const DefaultMeshConfig = `rootNamespace: istio-system
trustDomain: cluster.local
enableAutoMtls: true
enablePrometheusMerge: true
accessLogFile: ""
outboundTrafficPolicy:
  mode: ALLOW_ANY
defaultProviders:
  metrics:
  - prometheus
extensionProviders:
- name: prometheus
  prometheus: {}
- name: envoy
  envoyFileAccessLog:
    path: /dev/stdout
defaultConfig:
  discoveryAddress: istiod.istio-system.svc:15012
  statNameLength: 189
  proxyMetadata: {}
`

// IstiodOptions configures StartIstiod.
type IstiodOptions struct {
	// MeshConfig replaces DefaultMeshConfig (full YAML).
	MeshConfig string
	// Namespace istiod runs "in" (where it keeps its CA secret). Created if
	// missing. Default istio-system.
	Namespace string
	// Env adds/overrides environment variables (e.g. PILOT_* feature flags).
	Env map[string]string
	// Args are extra pilot-discovery discovery flags.
	Args []string
	// ReadyTimeout bounds the wait for /ready. Default 90s.
	ReadyTimeout time.Duration
}

// Istiod is a running pilot-discovery bound to 127.0.0.1.
type Istiod struct {
	// XDSAddr is the plaintext gRPC (ADS) address, like istiod's :15010.
	XDSAddr string
	// SecureXDSAddr is the mTLS xDS address (istiod's :15012).
	SecureXDSAddr string
	// HTTPAddr serves /ready and /debug/* (istiod's :8080).
	HTTPAddr string
	// MonitoringAddr serves /metrics (istiod's :15014).
	MonitoringAddr string
	// WebhookAddr is the HTTPS webhook address (istiod's :15017).
	WebhookAddr string
	// Dir holds mesh.yaml, meshNetworks.yaml and istiod.log.
	Dir     string
	LogPath string

	ctrlzPort int // ControlZ defaults to a fixed 9876, which would clash between parallel istiods
	cmd       *exec.Cmd
	done      chan struct{}
	waitErr   error
	stopOnce  sync.Once
	stopErr   error
}

// StartIstiod runs pilot-discovery against this Env's apiserver on free
// loopback ports and waits for /ready. Stopped by Env.Stop (or Istiod.Stop).
func (e *Env) StartIstiod(ctx context.Context, opts IstiodOptions) (*Istiod, error) {
	if opts.Namespace == "" {
		opts.Namespace = "istio-system"
	}
	if opts.MeshConfig == "" {
		opts.MeshConfig = DefaultMeshConfig
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 90 * time.Second
	}
	if e.Binaries.PilotDiscovery == "" || !fileExists(e.Binaries.PilotDiscovery) {
		return nil, fmt.Errorf("pilot-discovery binary missing at %q (run e2e/cluster/build-binaries.sh)", e.Binaries.PilotDiscovery)
	}
	if err := e.CreateNamespace(ctx, opts.Namespace, nil); err != nil {
		return nil, err
	}
	// freePort races with every other process picking loopback ports (the
	// test packages run in parallel), so a bind failure retries on new ports.
	for attempt := 1; ; attempt++ {
		i, err := e.startIstiodOnce(ctx, opts)
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			return i, err
		}
		e.logf("istiod attempt %d lost a port race, retrying on new ports: %v", attempt, firstLine(err.Error()))
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func (e *Env) startIstiodOnce(ctx context.Context, opts IstiodOptions) (*Istiod, error) {
	e.mu.Lock()
	if e.stopped {
		e.mu.Unlock()
		return nil, errors.New("env stopped")
	}
	dir := filepath.Join(e.Dir, fmt.Sprintf("istiod-%d", len(e.istiods)))
	e.mu.Unlock()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	mesh := filepath.Join(dir, "mesh.yaml")
	networks := filepath.Join(dir, "meshNetworks.yaml")
	if err := os.WriteFile(mesh, []byte(opts.MeshConfig), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(networks, []byte("networks: {}\n"), 0o644); err != nil {
		return nil, err
	}

	ports := make([]int, 6)
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	addr := func(p int) string { return fmt.Sprintf("127.0.0.1:%d", p) }
	i := &Istiod{
		HTTPAddr:       addr(ports[0]),
		XDSAddr:        addr(ports[1]),
		SecureXDSAddr:  addr(ports[2]),
		WebhookAddr:    addr(ports[3]),
		MonitoringAddr: addr(ports[4]),
		ctrlzPort:      ports[5],
		Dir:            dir,
		LogPath:        filepath.Join(dir, "istiod.log"),
		done:           make(chan struct{}),
	}
	logf, err := os.Create(i.LogPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child keeps its own descriptor

	args := []string{"discovery",
		"--kubeconfig=" + e.Kubeconfig,
		"--meshConfig=" + mesh,
		"--networksConfig=" + networks,
		"--httpAddr=" + i.HTTPAddr,
		"--grpcAddr=" + i.XDSAddr,
		"--secureGRPCAddr=" + i.SecureXDSAddr,
		"--httpsAddr=" + i.WebhookAddr,
		"--monitoringAddr=" + i.MonitoringAddr,
		"--clusterID=" + ClusterID,
		"--domain=cluster.local",
		"--ctrlz_address=127.0.0.1",
		fmt.Sprintf("--ctrlz_port=%d", i.ctrlzPort),
		"--log_output_level=default:info",
	}
	args = append(args, opts.Args...)
	// Not CommandContext: ctx bounds startup only; the process lives until Stop.
	cmd := exec.Command(e.Binaries.PilotDiscovery, args...)
	cmd.Dir = dir // istiod writes some files relative to its cwd
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childProcAttr()
	env := map[string]string{
		"POD_NAMESPACE": opts.Namespace,
		"POD_NAME":      "istiod-local",
		"KUBECONFIG":    e.Kubeconfig,
		// No webhooks to patch: there is no istio-sidecar-injector config.
		"INJECTION_WEBHOOK_CONFIG_NAME":  "",
		"VALIDATION_WEBHOOK_CONFIG_NAME": "",
		"PILOT_ENABLE_GATEWAY_API":       "false",
		"ISTIOD_CUSTOM_HOST":             "istiod.istio-system.svc",
		"REVISION":                       "default",
	}
	for k, v := range opts.Env {
		env[k] = v
	}
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	i.cmd = cmd

	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting pilot-discovery: %w", err)
	}
	go func() {
		i.waitErr = cmd.Wait()
		close(i.done)
	}()
	e.mu.Lock()
	e.istiods = append(e.istiods, i)
	e.mu.Unlock()

	if err := i.waitReady(ctx, opts.ReadyTimeout); err != nil {
		_ = i.Stop()
		return nil, fmt.Errorf("%w\n--- %s tail ---\n%s", err, i.LogPath, i.LogTail(40))
	}
	e.logf("istiod %s ready in %s: xds=%s http=%s log=%s", IstioVersion, time.Since(start).Round(time.Millisecond), i.XDSAddr, i.HTTPAddr, i.LogPath)
	return i, nil
}

// ClusterID is the Kubernetes cluster id istiod runs with; sidecars must send
// the same CLUSTER_ID or istiod cannot find their pods.
const ClusterID = "Kubernetes"

func (i *Istiod) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: 2 * time.Second}
	url := "http://" + i.HTTPAddr + "/ready"
	var last string // the last answer or error; the first try always sets it
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-i.done:
			return fmt.Errorf("pilot-discovery exited before ready: %v", i.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("istiod not ready at %s after %s (last: %s)", url, timeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Stop sends SIGTERM, waits up to 15s, then SIGKILLs the process group.
func (i *Istiod) Stop() error {
	i.stopOnce.Do(func() {
		if i.cmd == nil || i.cmd.Process == nil {
			return
		}
		pid := i.cmd.Process.Pid
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		select {
		case <-i.done:
		case <-time.After(15 * time.Second):
			i.stopErr = killGroup(pid)
			<-i.done
		}
		_ = killGroup(pid) // stragglers in the group, if any
	})
	return i.stopErr
}

// Exited reports whether pilot-discovery has exited (and with what).
func (i *Istiod) Exited() (bool, error) {
	select {
	case <-i.done:
		return true, i.waitErr
	default:
		return false, nil
	}
}

// LogTail returns the last n lines of istiod's log.
func (i *Istiod) LogTail(n int) string { return tailFile(i.LogPath, n) }

// DebugURL returns istiod's debug endpoint, e.g. DebugURL("configz").
func (i *Istiod) DebugURL(path string) string { return "http://" + i.HTTPAddr + "/debug/" + path }
