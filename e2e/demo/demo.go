// Package demo is `make demo`: a real etcd, kube-apiserver and istiod on
// loopback, the leanmesh controller (the real binary) installing the filters,
// sidecars observed over ADS, and two C-ABI test hosts loading leanmesh.so
// with the filter config istiod actually served. Every step checks what it
// shows, so the demo doubles as an end-to-end test (Options.Once).
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/release"
	"github.com/leanmesh/leanmesh/e2e/cluster"
	"github.com/leanmesh/leanmesh/e2e/envoyhost"
)

// Options configure a run.
type Options struct {
	// Once runs every step and returns; otherwise the demo waits for ctx
	// (Ctrl-C) before cleaning up.
	Once bool
	Out  io.Writer
	// RepoRoot holds config/crd and the sources the binaries build from.
	RepoRoot string
	// BinDir receives leanmesh.so, the controller and the test host.
	BinDir string
}

type run struct {
	opts     Options
	ctx      context.Context
	env      *cluster.Env
	istiod   *cluster.Istiod
	rel      release.Release
	bin      struct{ so, host, controller string }
	ctrl     *exec.Cmd
	ctrlDone chan struct{}
	ctrlExit error // cmd.Wait's result, set before ctrlDone closes
	alsAddr  string
	proxies  map[string]*proxy
	cleanup  []func() error
	step     int
}

func (r *run) say(format string, args ...any) { fmt.Fprintf(r.opts.Out, format+"\n", args...) }

func (r *run) section(title string) {
	r.step++
	fmt.Fprintf(r.opts.Out, "\n== %d. %s\n", r.step, title)
}

// Run executes the demo. It always cleans up what it started.
func Run(ctx context.Context, opts Options) (err error) {
	if opts.Out == nil {
		opts.Out = os.Stdout
	}
	if opts.RepoRoot == "" {
		if opts.RepoRoot, err = envoyhost.RepoRoot(); err != nil {
			return err
		}
	}
	if opts.BinDir == "" {
		opts.BinDir = filepath.Join(opts.RepoRoot, "bin")
	}
	r := &run{opts: opts, ctx: ctx, rel: release.Embedded().Default()}
	// A failed clean-up leaves processes or files behind: the demo fails with it.
	defer func() {
		for i := len(r.cleanup) - 1; i >= 0; i-- {
			if cerr := r.cleanup[i](); cerr != nil {
				err = errors.Join(err, fmt.Errorf("cleanup: %w", cerr))
			}
		}
	}()
	steps := []func() error{r.build, r.controlPlane, r.startController, r.sampleMesh, r.install, r.telemetry, r.prometheus, r.abSwitch, r.lazy}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	r.say("\nAll steps passed.")
	if !opts.Once {
		r.say("The control plane keeps running (kubeconfig: %s). Press Ctrl-C to stop and clean up.", r.env.Kubeconfig)
		<-ctx.Done()
	}
	return nil
}

func (r *run) build() error {
	r.section("Build leanmesh.so, the controller and the C ABI test host")
	if err := os.MkdirAll(r.opts.BinDir, 0o755); err != nil {
		return err
	}
	r.bin.so = filepath.Join(r.opts.BinDir, "leanmesh.so")
	r.bin.host = filepath.Join(r.opts.BinDir, "envoyhost")
	r.bin.controller = filepath.Join(r.opts.BinDir, "leanmesh")
	if err := envoyhost.BuildPlugin("./filters/cmd/leanmesh", r.bin.so); err != nil {
		return err
	}
	if err := envoyhost.BuildHost(r.bin.host); err != nil {
		return err
	}
	cmd := exec.CommandContext(r.ctx, "go", "build", "-o", r.bin.controller, "./controller/cmd/leanmesh")
	cmd.Dir, cmd.Stdout, cmd.Stderr = r.opts.RepoRoot, r.opts.Out, r.opts.Out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building the controller: %w", err)
	}
	r.say("built %s (Envoy Go SDK %s for Istio %s), %s, %s", r.bin.so, r.rel.SDK, r.rel.Istio, r.bin.controller, r.bin.host)
	return nil
}

func (r *run) controlPlane() error {
	r.section("Start etcd, kube-apiserver and istiod on loopback")
	if missing := cluster.CachedBinaries().Missing(); len(missing) > 0 {
		r.say("building %v from their Go modules first (~19 min on 2 cores, cached under %s)...", missing, cluster.CacheDir())
	}
	env, err := cluster.Start(r.ctx, cluster.Options{
		CRDPaths: []string{filepath.Join(r.opts.RepoRoot, "config", "crd", "bases")},
		Scheme:   v1alpha1.AddToScheme,
		Progress: r.opts.Out,
	})
	if err != nil {
		return err
	}
	r.env = env
	r.cleanup = append(r.cleanup, env.Stop)
	for _, ns := range []string{"istio-system", "leanmesh-system", "bookinfo"} {
		if err := env.CreateNamespace(r.ctx, ns, nil); err != nil {
			return err
		}
	}
	if r.istiod, err = env.StartIstiod(r.ctx, cluster.IstiodOptions{}); err != nil {
		return err
	}
	r.say("kube-apiserver %s, istiod %s (plaintext xDS on %s); kubeconfig %s", cluster.KubernetesVersion, cluster.IstioVersion, r.istiod.XDSAddr, env.Kubeconfig)
	return nil
}

func (r *run) startController() error {
	r.section("Run the leanmesh controller (the real binary) against that apiserver")
	port, err := freePort()
	if err != nil {
		return err
	}
	r.alsAddr = fmt.Sprintf("127.0.0.1:%d", port)
	return r.launchController()
}

// launchController starts the controller process; stopController kills it.
func (r *run) launchController() error {
	log, err := os.OpenFile(filepath.Join(r.env.Dir, "leanmesh-controller.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(r.bin.controller, "controller", "--kubeconfig", r.env.Kubeconfig,
		"--leader-elect=false", "--metrics-bind-address=0", "--health-probe-bind-address=0", "--log-format=text",
		// The demo's ALS client has no egress certificate yet: plaintext, test-only mode.
		"--lazyxds", "--lazyxds-als-address="+r.alsAddr, "--lazyxds-als-plaintext")
	cmd.Env = append(os.Environ(), "POD_NAMESPACE=leanmesh-system")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	r.ctrl, r.ctrlDone, r.ctrlExit = cmd, done, nil
	go func() { r.ctrlExit = errors.Join(cmd.Wait(), log.Close()); close(done) }()
	r.cleanup = append(r.cleanup, func() error { return r.stopController(false) })
	r.say("controller pid %d (lazy xDS on, ALS on %s), log %s", cmd.Process.Pid, r.alsAddr, log.Name())
	return nil
}

// stopController ends the controller: gracefully (SIGINT; it must then exit
// cleanly within 15 s), or with SIGKILL as a crash would.
func (r *run) stopController(kill bool) error {
	if r.ctrl == nil {
		return nil
	}
	defer func() { r.ctrl = nil }()
	sig := os.Interrupt
	if kill {
		sig = os.Kill
	}
	// ErrProcessDone: it already exited; its exit status below says how.
	if err := r.ctrl.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("controller pid %d: %w", r.ctrl.Process.Pid, err)
	}
	select {
	case <-r.ctrlDone:
	case <-time.After(15 * time.Second):
		if err := r.ctrl.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("controller pid %d: %w", r.ctrl.Process.Pid, err)
		}
		<-r.ctrlDone
		return fmt.Errorf("controller pid %d did not exit within 15 s of SIGINT; killed", r.ctrl.Process.Pid)
	}
	if kill {
		return nil // "signal: killed" is what was asked for
	}
	if r.ctrlExit != nil {
		return fmt.Errorf("controller pid %d after SIGINT: %w", r.ctrl.Process.Pid, r.ctrlExit)
	}
	return nil
}

var errTimeout = errors.New("timed out")

// waitFor polls cond until it returns nil or the deadline passes.
func (r *run) waitFor(what string, d time.Duration, cond func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || r.ctx.Err() != nil {
			return fmt.Errorf("%s: %w: %v", what, errTimeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func contains(list []string, s string) bool { return slices.Contains(list, s) }

func joinShort(list []string) string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = strings.TrimPrefix(s, "envoy.filters.http.")
	}
	return strings.Join(out, " → ")
}
