// Package prometheus runs the real Prometheus server (Debian's package,
// v2.42, /usr/bin/prometheus) on loopback for end-to-end tests and queries it
// through client_golang's HTTP API client, the library dashboards and Kiali
// use too.
//
// A test gives it scrape configs (the shipped job, or static targets), waits
// until every target has been scraped after the traffic it sent, and asks it
// PromQL:
//
//	srv := prometheus.StartT(t, prometheus.Options{ScrapeConfigs: []string{prometheus.StaticJob("leanmesh", addr)}})
//	...send traffic...
//	srv.WaitScrapedT(t, "leanmesh", time.Now())
//	v := srv.QueryVectorT(t, `sum(istio_requests_total)`)
//
// Prometheus has no "scrape now" API, so scrapes are driven by a short
// interval (1s by default) and awaited through the targets API. The package
// imports no Kubernetes client; e2e/cluster is the place for the apiserver a
// kubernetes_sd_configs job may point at.
package prometheus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"sigs.k8s.io/yaml"
)

// BinaryEnvVar overrides where the server binary is looked up.
const BinaryEnvVar = "LEANMESH_PROMETHEUS"

// DefaultBinary is where Debian's prometheus package installs the server.
const DefaultBinary = "/usr/bin/prometheus"

// Options configures Start.
type Options struct {
	// ScrapeConfigs are YAML documents, each one scrape_config (a mapping
	// with job_name) or a list of them, as a shipped scrape file holds them.
	ScrapeConfigs []string
	// RuleFiles are rule files loaded as rule_files (evaluated every
	// ScrapeInterval).
	RuleFiles []string
	// ScrapeInterval is the global scrape and rule evaluation interval; the
	// scrape timeout equals it. Default 1s. A job's own scrape_interval wins,
	// as in any Prometheus.
	ScrapeInterval time.Duration
	// NativeHistograms starts the server with --enable-feature=native-histograms
	// (it then prefers the protobuf exposition format when scraping).
	NativeHistograms bool
	// Binary is the prometheus executable. Default: $LEANMESH_PROMETHEUS,
	// then prometheus on PATH, then /usr/bin/prometheus.
	Binary string
	// Dir holds prometheus.yml, the TSDB and prometheus.log. Default: a new
	// temp dir removed by Stop (a given Dir is kept).
	Dir string
	// StartTimeout bounds the wait for /-/ready. Default 60s.
	StartTimeout time.Duration
}

// Server is a running Prometheus.
type Server struct {
	// URL is the base URL, e.g. http://127.0.0.1:40123.
	URL string
	// API is client_golang's v1 client for everything the helpers below do not cover.
	API v1.API
	// Dir holds prometheus.yml, data/ and prometheus.log.
	Dir string

	opts   Options
	cmd    *exec.Cmd
	exited chan struct{}
	ownDir bool
}

// Start writes the config, starts the server on a free loopback port and
// waits until it reports ready. Stop it with Stop.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.ScrapeInterval <= 0 {
		opts.ScrapeInterval = time.Second
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 60 * time.Second
	}
	bin, err := binary(opts.Binary)
	if err != nil {
		return nil, err
	}
	opts.Binary = bin
	cfg, err := renderConfig(opts)
	if err != nil {
		return nil, err
	}
	dir, own := opts.Dir, false
	if dir == "" {
		if dir, err = os.MkdirTemp("", "leanmesh-prometheus-"); err != nil {
			return nil, err
		}
		own = true
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), cfg, 0o644); err != nil {
		return nil, err
	}
	// A free port can be taken by another test between probing and binding:
	// retry the start with a new port.
	var lastErr error
	for range 3 {
		s, err := start(ctx, opts, dir, own)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	if own {
		os.RemoveAll(dir)
	}
	return nil, lastErr
}

// StartT is Start for tests: it fails the test on error and stops the server
// in t.Cleanup (keeping Dir and printing the log's tail if the test failed).
func StartT(t testing.TB, opts Options) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("prometheus: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			s.ownDir = false
			t.Logf("prometheus kept in %s; log tail:\n%s", s.Dir, tail(filepath.Join(s.Dir, "prometheus.log"), 30))
		}
		if err := s.Stop(); err != nil {
			t.Errorf("prometheus stop: %v", err)
		}
	})
	return s
}

var errPortTaken = errors.New("listen address already in use")

func start(ctx context.Context, opts Options, dir string, own bool) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	args := []string{
		"--config.file=" + filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + addr,
		"--web.enable-lifecycle", // Reload posts /-/reload
		"--log.level=info",
	}
	if opts.NativeHistograms {
		args = append(args, "--enable-feature=native-histograms")
	}
	logPath := filepath.Join(dir, "prometheus.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child keeps its own descriptor
	cmd := exec.Command(opts.Binary, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Own process group, and SIGKILL if the test binary dies without cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", opts.Binary, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	url := "http://" + addr
	client, err := api.NewClient(api.Config{Address: url})
	if err != nil {
		_ = cmd.Process.Kill()
		return nil, err
	}
	s := &Server{URL: url, API: v1.NewAPI(client), Dir: dir, opts: opts, cmd: cmd, exited: exited, ownDir: own}
	if err := s.waitReady(ctx, opts.StartTimeout); err != nil {
		_ = s.kill()
		log := tail(logPath, 20)
		if strings.Contains(log, "address already in use") {
			return nil, fmt.Errorf("%w: %s", errPortTaken, addr)
		}
		return nil, fmt.Errorf("prometheus (%s) not ready: %w\n--- %s ---\n%s", opts.Binary, err, logPath, log)
	}
	return s, nil
}

func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case <-s.exited:
			return errors.New("process exited")
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/-/ready", nil)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.exited:
			return errors.New("process exited")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Reload replaces the scrape configs and rule files (other options stay) and
// has the server reload them, as a user's config change would.
func (s *Server) Reload(ctx context.Context, scrapeConfigs, ruleFiles []string) error {
	opts := s.opts
	opts.ScrapeConfigs, opts.RuleFiles = scrapeConfigs, ruleFiles
	cfg, err := renderConfig(opts)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.Dir, "prometheus.yml"), cfg, 0o644); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/-/reload", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("reload: HTTP %d (see %s)", resp.StatusCode, filepath.Join(s.Dir, "prometheus.log"))
	}
	s.opts = opts
	return nil
}

// Stop kills the server and removes Dir if Start created it.
func (s *Server) Stop() error {
	err := s.kill()
	if s.ownDir {
		if rmErr := os.RemoveAll(s.Dir); err == nil {
			err = rmErr
		}
	}
	return err
}

func (s *Server) kill() error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	// SIGTERM lets the TSDB close cleanly; SIGKILL after 10s.
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
	return nil
}

// StaticJob is a scrape_config scraping targets (host:port) at /metrics,
// named job.
func StaticJob(job string, targets ...string) string {
	b, _ := yaml.Marshal(map[string]any{
		"job_name":       job,
		"static_configs": []any{map[string]any{"targets": targets}},
	})
	return string(b)
}

// renderConfig builds prometheus.yml. Scrape configs are parsed and
// re-emitted, so a malformed one fails here with its index rather than as a
// server that never becomes ready.
func renderConfig(opts Options) ([]byte, error) {
	var jobs []any
	for i, doc := range opts.ScrapeConfigs {
		var v any
		if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
			return nil, fmt.Errorf("scrape config %d: %w", i, err)
		}
		switch v := v.(type) {
		case map[string]any:
			jobs = append(jobs, v)
		case []any:
			jobs = append(jobs, v...)
		default:
			return nil, fmt.Errorf("scrape config %d: want a scrape_config mapping or a list of them, got %T", i, v)
		}
	}
	interval := durationString(opts.ScrapeInterval)
	cfg := map[string]any{
		"global": map[string]any{
			"scrape_interval":     interval,
			"scrape_timeout":      interval,
			"evaluation_interval": interval,
		},
		"scrape_configs": jobs,
	}
	if len(opts.RuleFiles) > 0 {
		abs := make([]string, len(opts.RuleFiles))
		for i, f := range opts.RuleFiles {
			p, err := filepath.Abs(f)
			if err != nil {
				return nil, err
			}
			abs[i] = p
		}
		cfg["rule_files"] = abs
	}
	return yaml.Marshal(cfg)
}

// durationString formats a duration as Prometheus' config expects (e.g. 1500ms).
func durationString(d time.Duration) string {
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}

func binary(given string) (string, error) {
	if given == "" {
		given = os.Getenv(BinaryEnvVar)
	}
	if given == "" {
		if p, err := exec.LookPath("prometheus"); err == nil {
			given = p
		} else {
			given = DefaultBinary
		}
	}
	if st, err := os.Stat(given); err != nil || st.IsDir() {
		return "", fmt.Errorf("prometheus server not found at %s: install Debian's prometheus package with "+
			"`e2e/cluster/build-binaries.sh tools`, or set %s", given, BinaryEnvVar)
	}
	return given, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
