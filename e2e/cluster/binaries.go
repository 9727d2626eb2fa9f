package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Versions of the real control-plane components. They are passed to
// build-binaries.sh so the Go side and the script always agree on cache paths.
const (
	// KubernetesVersion matches controller-runtime v0.25.2 (k8s.io/* v0.37.0).
	KubernetesVersion = "v1.37.0"
	// IstioVersion is the only recent istio.io/istio the module proxy serves.
	IstioVersion = "v0.0.0-20260827124520-eed52ebb66ad"
	// IstioAPIVersion is the istio.io/api release whose CRDs we install; it
	// is also what the project requires and what pilot-discovery is built with.
	IstioAPIVersion = "v1.31.1"
)

// Binaries are absolute paths of everything Start and StartIstiod run.
type Binaries struct {
	KubeAPIServer  string
	Etcd           string
	Kubectl        string // optional: envtest only needs it for its kubectl helpers
	PilotDiscovery string
	IstioCRDs      string // Istio's customresourcedefinitions.gen.yaml
}

// CacheDir is where build-binaries.sh caches builds; it lives outside the
// repo so `git clean` or a fresh worktree does not cost another 16 minutes.
func CacheDir() string {
	if d := os.Getenv("LEANMESH_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "leanmesh")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "leanmesh-cache")
	}
	return filepath.Join(home, ".cache", "leanmesh")
}

// CachedBinaries returns the expected paths without checking they exist.
func CachedBinaries() Binaries {
	c := CacheDir()
	b := Binaries{
		KubeAPIServer:  filepath.Join(c, "bin", "kube-apiserver-"+KubernetesVersion, "kube-apiserver"),
		Etcd:           "/usr/bin/etcd",
		PilotDiscovery: filepath.Join(c, "bin", "pilot-discovery-"+IstioVersion, "pilot-discovery"),
		IstioCRDs:      filepath.Join(c, "crds", "istio-api-"+IstioAPIVersion, "customresourcedefinitions.gen.yaml"),
	}
	if p, err := exec.LookPath("etcd"); err == nil && !fileExists(b.Etcd) {
		b.Etcd = p
	}
	// Prefer an installed kubectl; fall back to one the script built.
	if p, err := exec.LookPath("kubectl"); err == nil {
		b.Kubectl = p
	} else if p := filepath.Join(c, "bin", "kubectl-"+KubernetesVersion, "kubectl"); fileExists(p) {
		b.Kubectl = p
	}
	return b
}

// Missing lists the required artifacts that are not present.
func (b Binaries) Missing() []string {
	var m []string
	for _, p := range []string{b.KubeAPIServer, b.Etcd, b.PilotDiscovery, b.IstioCRDs} {
		if !fileExists(p) {
			m = append(m, p)
		}
	}
	return m
}

// BuildScript locates build-binaries.sh next to this source file (tests run
// from the repo); LEANMESH_BUILD_SCRIPT overrides it.
func BuildScript() (string, error) {
	if p := os.Getenv("LEANMESH_BUILD_SCRIPT"); p != "" {
		return p, nil
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate e2e/cluster sources to find build-binaries.sh")
	}
	p := filepath.Join(filepath.Dir(file), "build-binaries.sh")
	if !fileExists(p) {
		return "", fmt.Errorf("build script not found at %s (set LEANMESH_BUILD_SCRIPT)", p)
	}
	return p, nil
}

// EnsureBinaries runs build-binaries.sh when an artifact is missing and
// returns the paths. progress receives the script's output line by line as it
// runs (a cold build takes ~16 minutes, so silence would look like a hang).
func EnsureBinaries(ctx context.Context, progress io.Writer) (Binaries, error) {
	b := CachedBinaries()
	missing := b.Missing()
	if len(missing) == 0 {
		return b, nil
	}
	script, err := BuildScript()
	if err != nil {
		return b, err
	}
	if progress == nil {
		progress = os.Stderr
	}
	fmt.Fprintf(progress, "e2e/cluster: missing %s; running %s (cache %s)\n", strings.Join(missing, ", "), script, CacheDir())
	start := time.Now()
	cmd := exec.CommandContext(ctx, "bash", script, "cluster")
	cmd.Env = append(os.Environ(),
		"K8S_VERSION="+KubernetesVersion,
		"ISTIO_VERSION="+IstioVersion,
		"ISTIO_API_VERSION="+IstioAPIVersion,
		"LEANMESH_CACHE="+CacheDir(),
	)
	cmd.SysProcAttr = childProcAttr() // a killed test must not leave `go build` running
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	tail := newTailBuffer(40)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := sc.Text()
			_, _ = tail.Write([]byte(line + "\n")) // appends in memory: never fails
			fmt.Fprintln(progress, line)
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	runErr := cmd.Run()
	pw.Close()
	<-done
	if runErr != nil {
		return b, fmt.Errorf("build-binaries.sh failed after %s: %w\n--- last output ---\n%s", time.Since(start).Round(time.Second), runErr, tail.String())
	}
	fmt.Fprintf(progress, "e2e/cluster: binaries ready in %s\n", time.Since(start).Round(time.Second))
	b = CachedBinaries()
	if m := b.Missing(); len(m) > 0 {
		return b, fmt.Errorf("build-binaries.sh succeeded but still missing: %s", strings.Join(m, ", "))
	}
	return b, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}
