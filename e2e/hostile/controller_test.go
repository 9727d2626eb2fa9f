package hostile

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/e2e/cluster"
)

const controllerNS = "leanmesh-system"

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// controllerBinary builds controller/cmd/leanmesh once per test process,
// as `make controller` does (CGO off, trimmed).
func controllerBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "leanmesh-hostile-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "leanmesh")
		cmd := exec.Command("go", "build", "-trimpath", "-o", binPath, "./controller/cmd/leanmesh")
		cmd.Dir = "../.."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./controller/cmd/leanmesh: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// startEnv is the real etcd + kube-apiserver with leanmesh's CRDs and the
// controller's namespace.
func startEnv(t *testing.T) *cluster.Env {
	t.Helper()
	env := cluster.StartT(t, cluster.Options{CRDPaths: []string{"../../config/crd/bases"}, Scheme: v1alpha1.AddToScheme})
	if err := env.CreateNamespace(context.Background(), controllerNS, nil); err != nil {
		t.Fatal(err)
	}
	return env
}

// freeAddr reserves a loopback port for a flag that takes an address.
func freeAddr(t testing.TB) string {
	t.Helper()
	addr, err := pickAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// pickAddr returns a loopback port free now. Another process may take it
// before the controller binds it, so every launch picks its own.
func pickAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// pickAddrs: the three listeners of one launch.
func pickAddrs() (addrs, error) {
	var a [3]string
	for i := range a {
		var err error
		if a[i], err = pickAddr(); err != nil {
			return addrs{}, err
		}
	}
	return addrs{a[0], a[1], a[2]}, nil
}

// proc is one run of `leanmesh controller` as a child process.
type proc struct {
	name        string
	cmd         *exec.Cmd
	pid         int
	metricsAddr string
	probeAddr   string
	alsAddr     string
	logPath     string
	exited      chan struct{}
	exitErr     error
}

// addrs are one replica's listeners; a restarted process keeps them.
type addrs struct{ metrics, probe, als string }

func newAddrs(t testing.TB) addrs { return addrs{freeAddr(t), freeAddr(t), freeAddr(t)} }

// launch runs the real binary against env with the lazy-xDS loop on;
// extra flags are appended. Its output is appended to logPath.
func launch(bin string, env *cluster.Env, name string, a addrs, logPath string, extra ...string) (*proc, error) {
	p := &proc{name: name, metricsAddr: a.metrics, probeAddr: a.probe, alsAddr: a.als, logPath: logPath, exited: make(chan struct{})}
	args := []string{"controller",
		"--kubeconfig", env.Kubeconfig,
		// The test reads the controller's refusal counters itself: the
		// documented plain option, not the chart's authenticated default.
		"--metrics-bind-address", a.metrics, "--metrics-secure=false",
		"--health-probe-bind-address", a.probe,
		"--leader-election-namespace", controllerNS,
		"--log-format", "text",
		"--lazyxds", "--lazyxds-als-address", a.als,
	}
	args = append(args, extra...)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), "POD_NAMESPACE="+controllerNS, "POD_NAME="+name)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p.pid = p.cmd.Process.Pid
	go func() {
		p.exitErr = p.cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	return p, nil
}

// startController runs one controller process until the test ends.
func startController(t *testing.T, env *cluster.Env, name string, extra ...string) *proc {
	t.Helper()
	p, err := launch(controllerBinary(t), env, name, newAddrs(t), filepath.Join(t.TempDir(), name+".log"), extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s log tail ---\n%s", name, tail(p.logPath, 40))
		}
	})
	return p
}

// waitALS waits until this replica leads and serves ALS (the loop opens
// the listener only after its informers synced).
func (p *proc) waitALS(t testing.TB, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		select {
		case <-p.exited:
			t.Fatalf("%s exited: %v\n%s", p.name, p.exitErr, tail(p.logPath, 40))
		default:
		}
		if serving(p.alsAddr) {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: ALS not served after %s\n%s", p.name, timeout, tail(p.logPath, 40))
	return 0
}

// stop sends SIGTERM (the pod's rollout) and waits.
func (p *proc) stop(t testing.TB) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(60 * time.Second):
		t.Errorf("%s did not exit 60s after SIGTERM", p.name)
		p.kill()
	}
}

func (p *proc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// memory reads the kernel's view of the process: resident set now and its
// high-water mark (VmHWM, the peak since start), in bytes.
func (p *proc) memory() (rss, peak uint64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, 0, err
		}
		if k == "VmRSS" {
			rss = n << 10
		} else {
			peak = n << 10
		}
	}
	return rss, peak, sc.Err()
}

// scrape reads the controller's /metrics.
func (p *proc) scrape() (map[string]*dto.MetricFamily, int, error) {
	resp, err := http.Get("http://" + p.metricsAddr + "/metrics")
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, 0, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	return fams, len(body), err
}

// value sums a family's samples whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
	var sum float64
	for _, m := range f.Metric {
		ok := true
		for k, v := range want {
			found := false
			for _, l := range m.Label {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			ok = ok && found
		}
		if !ok {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Untyped != nil:
			sum += m.Untyped.GetValue()
		}
	}
	return sum
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// serving reports whether something accepts connections at addr.
func serving(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
