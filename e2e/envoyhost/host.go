// Package envoyhost drives bin/envoyhost, a C test host that loads an Envoy
// Go-extension .so through Envoy's real C ABI (contrib/golang, v1.39.1)
// without Envoy: it exports the envoyGoFilter* host functions and calls the
// library's entry points the way Envoy's golang HTTP and network filters
// do. One host process is one proxy: it loads one .so once (one Go runtime
// per process), so a test that needs a client and a server sidecar starts
// two hosts and relays headers between them.
//
// The line protocol is documented at the top of host.c. This package is
// usable from tests, benchmarks and demos; every wait has a timeout and a
// failure names the phase, the call and the status.
package envoyhost

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// CAPIStatus values (api.h).
const (
	CAPIOK                   = 0
	CAPIFilterIsGone         = -1
	CAPIFilterIsDestroy      = -2
	CAPINotInGo              = -3
	CAPIInvalidPhase         = -4
	CAPIValueNotFound        = -5
	CAPIYield                = -6
	CAPIInternalFailure      = -7
	CAPISerializationFailure = -8
	CAPIInvalidScene         = -9
	CAPIInvalidIPAddress     = -10
)

// Access log types (api.AccessLogType) the golang filter forwards.
const (
	LogDownstreamStart    = 4
	LogDownstreamPeriodic = 5
	LogDownstreamEnd      = 6
)

// Options configure one host process (one proxy).
type Options struct {
	HostBin  string // path of the envoyhost binary (see BuildHost)
	SO       string // the Go extension .so to load
	Floor    bool   // load no .so: empty C functions stand in (benchmark floor)
	Workers  int    // worker threads = Envoy --concurrency (default 1)
	LogLevel int    // Envoy log level seen by the .so: 0 trace .. 5 critical (default 2 info)
	// Node is the proxy's envoy.config.core.v3.Node. Envoy v1.39.1's golang
	// filter never sets the CEL local_info, so GetProperty("xds.node...")
	// answers "not found" there; NodeInCEL makes the host answer from Node
	// anyway (NOT what Envoy does - use it only to test code paths).
	Node      *corev3.Node
	NodeInCEL bool
	// Env is added to the host process's environment: a sidecar's identity
	// (POD_NAME, ISTIO_META_*, ...) as Istio's injector sets it for Envoy.
	Env []string
	// CommandTimeout bounds every command except Bench (default 30s).
	CommandTimeout time.Duration
	Stderr         io.Writer // host stderr (default os.Stderr)
}

// Host is one running envoyhost process.
type Host struct {
	opts    Options
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	lines   chan string
	mu      sync.Mutex
	broken  error
	timeout time.Duration
}

// Start launches the host, loads the library and returns when it is ready.
func Start(opts Options) (*Host, error) {
	if opts.Workers <= 0 {
		opts.Workers = 1
	}
	if opts.CommandTimeout <= 0 {
		opts.CommandTimeout = 30 * time.Second
	}
	if opts.HostBin == "" {
		return nil, errors.New("envoyhost: Options.HostBin is empty")
	}
	if !opts.Floor && opts.SO == "" {
		return nil, errors.New("envoyhost: Options.SO is empty")
	}
	cmd := exec.Command(opts.HostBin)
	cmd.Env = append(os.Environ(), opts.Env...)
	if opts.Stderr != nil {
		cmd.Stderr = opts.Stderr
	} else {
		cmd.Stderr = os.Stderr
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("envoyhost: start %s: %w", opts.HostBin, err)
	}
	h := &Host{opts: opts, cmd: cmd, stdin: stdin, lines: make(chan string, 16), timeout: opts.CommandTimeout}
	go func() {
		r := bufio.NewReaderSize(stdout, 1<<20)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				close(h.lines)
				return
			}
			h.lines <- strings.TrimRight(line, "\r\n")
		}
	}()
	setup := []string{
		"HELLO",
		fmt.Sprintf("LOGLEVEL %d", opts.LogLevel),
		fmt.Sprintf("WORKERS %d", opts.Workers),
	}
	if opts.NodeInCEL {
		setup = append(setup, "NODE_IN_CEL 1")
	}
	if opts.Node != nil {
		entries, err := MessageProperties("xds.node", opts.Node)
		if err != nil {
			h.Close()
			return nil, err
		}
		for _, e := range entries {
			setup = append(setup, fmt.Sprintf("NODEPROP %s %d %s", b64(e.Path), e.Status, b64b(e.Value)))
		}
	}
	if opts.Floor {
		setup = append(setup, "LOADFLOOR")
	} else {
		setup = append(setup, "LOAD "+b64(opts.SO))
	}
	for _, c := range setup {
		if _, err := h.cmdLine(c, h.timeout); err != nil {
			h.Close()
			return nil, err
		}
	}
	return h, nil
}

// Close stops the host process.
func (h *Host) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil {
		return nil
	}
	if h.broken == nil {
		fmt.Fprintln(h.stdin, "QUIT")
	}
	h.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- h.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(5 * time.Second):
		err = errors.Join(errors.New("envoyhost: no exit within 5s of QUIT; killed"), kill(h.cmd.Process), <-done)
	}
	h.cmd = nil
	if h.broken == nil {
		h.broken = errors.New("envoyhost: host closed")
	}
	return err
}

// kill ends the host process; one that has already exited is not an error.
func kill(p *os.Process) error {
	if err := p.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("envoyhost: kill pid %d: %w", p.Pid, err)
	}
	return nil
}

// cmdLine sends one command line and waits for its reply line.
func (h *Host) cmdLine(line string, timeout time.Duration) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.send([]string{line}, timeout)
}

func (h *Host) send(lines []string, timeout time.Duration) (string, error) {
	if h.broken != nil {
		return "", h.broken
	}
	cmdName := strings.SplitN(lines[len(lines)-1], " ", 2)[0]
	if _, err := io.WriteString(h.stdin, strings.Join(lines, "\n")+"\n"); err != nil {
		h.broken = fmt.Errorf("envoyhost: write %s: %w", cmdName, err)
		return "", h.broken
	}
	select {
	case l, ok := <-h.lines:
		if !ok {
			h.broken = fmt.Errorf("envoyhost: host exited during %s (crash in the .so or the host? see stderr)", cmdName)
			return "", h.broken
		}
		if strings.HasPrefix(l, "ERR") {
			return "", fmt.Errorf("envoyhost: %s: %s", cmdName, strings.TrimSpace(strings.TrimPrefix(l, "ERR")))
		}
		return strings.TrimSpace(strings.TrimPrefix(l, "OK")), nil
	case <-time.After(timeout):
		h.broken = errors.Join(fmt.Errorf("envoyhost: %s: no reply within %v; host killed", cmdName, timeout), kill(h.cmd.Process))
		return "", h.broken
	}
}

func b64(s string) string {
	if s == "" {
		return "-"
	}
	return base64.StdEncoding.EncodeToString([]byte(s))
}

func b64b(b []byte) string {
	if len(b) == 0 {
		return "-"
	}
	return base64.StdEncoding.EncodeToString(b)
}

// Config creates an HTTP filter config (FilterConfig::newGoPluginConfig)
// for plugin with the given plugin_config Any; nil means an empty Any.
func (h *Host) Config(plugin string, config *anypb.Any) (uint64, error) {
	raw, err := marshalAny(config)
	if err != nil {
		return 0, err
	}
	out, err := h.cmdLine("CONFIG "+b64(plugin)+" "+b64b(raw), h.timeout)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(out, 10, 64)
}

// ConfigMessage wraps msg in an Any and calls Config.
func (h *Host) ConfigMessage(plugin string, msg proto.Message) (uint64, error) {
	a, err := anypb.New(msg)
	if err != nil {
		return 0, err
	}
	return h.Config(plugin, a)
}

// RouteConfig creates a per-route plugin config (RoutePluginConfig) and
// returns a handle for Request.Route; it is merged with the filter config
// through envoyGoFilterMergeHttpPluginConfig at the first request.
func (h *Host) RouteConfig(plugin string, config *anypb.Any) (int, error) {
	raw, err := marshalAny(config)
	if err != nil {
		return 0, err
	}
	out, err := h.cmdLine("ROUTECONFIG "+b64(plugin)+" "+b64b(raw), h.timeout)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(out)
}

// DestroyConfig destroys a filter config (~FilterConfig).
func (h *Host) DestroyConfig(id uint64) error {
	_, err := h.cmdLine(fmt.Sprintf("DESTROYCONFIG %d", id), h.timeout)
	return err
}

func marshalAny(a *anypb.Any) ([]byte, error) {
	if a == nil {
		return nil, nil
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(a)
}

// Live reports the host's live objects.
type Live struct {
	Requests    int // httpRequest objects not yet finalized by Go
	Filters     int // Filter objects alive
	HTTPConfigs int // httpConfig objects not yet finalized by Go
	NetWrappers int // network filter wrappers not yet finalized by Go
}

// Live returns the live object counts.
func (h *Host) Live() (Live, error) {
	out, err := h.cmdLine("LIVE", h.timeout)
	if err != nil {
		return Live{}, err
	}
	var l Live
	_, err = fmt.Sscan(out, &l.Requests, &l.Filters, &l.HTTPConfigs, &l.NetWrappers)
	return l, err
}

// GC calls envoyGoFilterCleanUp: the library runs a GC and waits for its
// finalizers (which release requests through envoyGoFilterHttpFinalize).
// It also turns on the SDK's asan mode (a GC per config destroy).
func (h *Host) GC() error {
	_, err := h.cmdLine("GC", h.timeout)
	return err
}

// WaitNoLiveRequests runs GCs until no request is alive or timeout.
func (h *Host) WaitNoLiveRequests(timeout time.Duration) (Live, error) {
	deadline := time.Now().Add(timeout)
	for {
		if err := h.GC(); err != nil {
			return Live{}, err
		}
		l, err := h.Live()
		if err != nil || (l.Requests == 0 && l.Filters == 0) {
			return l, err
		}
		if time.Now().After(deadline) {
			return l, fmt.Errorf("envoyhost: %d requests and %d filters still alive after %v", l.Requests, l.Filters, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Metric is one metric defined by the library through the SDK.
type Metric struct {
	Config  uint64 `json:"config"`
	ID      uint32 `json:"id"`
	Type    int    `json:"type"` // 0 counter, 1 gauge, 2 histogram
	Name    string `json:"name"`
	Value   uint64 `json:"value"`
	Samples uint64 `json:"samples"`
}

// Metrics returns every metric of every config.
func (h *Host) Metrics() ([]Metric, error) {
	out, err := h.cmdLine("METRICS", h.timeout)
	if err != nil {
		return nil, err
	}
	var m []Metric
	err = json.Unmarshal([]byte(out), &m)
	return m, err
}

// Event is a Go log line, a non-OK C API answer or a host note.
type Event struct {
	Type   string `json:"type"` // "log", "capi", "host"
	Level  int    `json:"level"`
	Msg    string `json:"msg"`
	API    string `json:"api"`
	Status int    `json:"status"`
	Name   string `json:"name"`
	State  string `json:"state"`
	Req    uint64 `json:"req"`
	Key    string `json:"key"` // property path or value id for capi events
}

// Events returns and clears the events recorded since the last call.
func (h *Host) Events() ([]Event, error) {
	out, err := h.cmdLine("EVENTS", h.timeout)
	if err != nil {
		return nil, err
	}
	var e struct {
		Dropped int     `json:"dropped"`
		Events  []Event `json:"events"`
	}
	err = json.Unmarshal([]byte(out), &e)
	return e.Events, err
}

// IstioClusterMetadata builds cluster metadata the way istiod sets it:
// filter_metadata.istio.services = [{host, name, namespace}].
func IstioClusterMetadata(host, name, namespace string) *corev3.Metadata {
	svc, _ := structpb.NewStruct(map[string]interface{}{
		"services": []interface{}{map[string]interface{}{"host": host, "name": name, "namespace": namespace}},
	})
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": svc}}
}

// TypedStruct wraps fields in an xds.type.v3.TypedStruct Any, the usual
// plugin_config of Envoy Go plugins.
func TypedStruct(typeURL string, fields map[string]interface{}) (*anypb.Any, error) {
	v, err := structpb.NewStruct(fields)
	if err != nil {
		return nil, err
	}
	return anypb.New(&xdstypev3.TypedStruct{TypeUrl: typeURL, Value: v})
}

// DecodeTypedStruct returns the fields of an xds.type.v3.TypedStruct Any.
func DecodeTypedStruct(a *anypb.Any) (map[string]interface{}, error) {
	ts := &xdstypev3.TypedStruct{}
	if err := a.UnmarshalTo(ts); err != nil {
		return nil, err
	}
	return ts.GetValue().AsMap(), nil
}
