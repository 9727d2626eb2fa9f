// Package tcpstats is leanmesh's network filter ("leanmesh-tcp"): Istio's
// four TCP metrics (istio_tcp_connections_opened_total, _closed_total,
// istio_tcp_sent_bytes_total, istio_tcp_received_bytes_total) with the
// standard 23 labels, in the same process-wide registry as the HTTP filter.
//
// What it reads from Envoy, and nothing else:
//   - UpstreamLocalAddress() / UpstreamRemoteAddress() of the downstream
//     ConnectionCallback's StreamInfo: in the v1.39 SDK they return the
//     downstream connection's local address (the original destination after
//     original_dst) and its direct remote address. Inbound looks the peer up
//     by the remote IP, outbound by the local (original destination) IP, in
//     the workload table (filters/workloads). Gateways know no peer.
//   - len() of the buffers of OnData (bytes received from the downstream)
//     and OnWrite (bytes sent to it).
//   - OnEvent LocalClose / RemoteClose.
//
// Semantics follow istio_stats' reportHelper for TCP: opened is counted
// once, at the connection's first report (a scheduler tick after
// tcp_reporting_duration, or its close); byte deltas at every report; closed
// once at the first close event, also for a connection reset before any
// data. No goroutine or timer per connection: one Scheduler per process.
//
// What Envoy guarantees: every connection that reached OnNewConnection gets
// exactly one LocalClose or RemoteClose event (ConnectionImpl raises it when
// the socket closes, including drains and resets), except when the process
// exits. The SDK itself keeps the filter in a map until that event. As a
// second line, the scheduler set is bounded (DefaultMaxConnections) and a
// connection without any callback for DefaultStaleAfter leaves it.
//
// Not observable through the v1.39 network API: TLS (no SslConnection, no
// ALPN), so principals are "unknown" and no mutual_tls is ever claimed; the
// upstream cluster, so an outbound connection's destination_service is
// "unknown"; the worker id.
//
// WARNING (Envoy v1.36.2 .. v1.39.1): the C++ side of the Go network filter
// drains every read buffer after OnData (golang.cc Filter::onData: "TODO: do
// not drain buffer by default"), so a Go network filter placed before
// tcp_proxy swallows the downstream's bytes. The controller refuses to
// install this filter until Envoy has a non-draining mode (docs/tcp.md,
// controller/render/tcp.go).
package tcpstats

import (
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/leanmesh/leanmesh/filters/panicsafe"
	"github.com/leanmesh/leanmesh/filters/peer"
	"github.com/leanmesh/leanmesh/filters/pluginconfig"
	"github.com/leanmesh/leanmesh/filters/telemetry"
	"github.com/leanmesh/leanmesh/filters/workloads"
)

// Parser is the process's one network-filter config parser. ParseConfig
// cannot return an error: a bad config yields a pass-through Config, counted
// in leanmesh_config_rejected_total and logged once.
type Parser struct{}

func (Parser) ParseConfig(a *anypb.Any) (out interface{}) {
	defer panicsafe.Recover[interface{}]("tcp.ParseConfig", &out, &Config{}, nil)
	c, err := pluginconfig.FromAny(a)
	if err == nil {
		var cfg *Config
		if cfg, err = NewConfig(c, Options{}); err == nil {
			return cfg
		}
	}
	telemetry.Self.Counter("leanmesh_config_rejected_total", "", "").Add(1)
	logOnce("config_rejected", "leanmesh-tcp: config rejected, the filter passes connections through unobserved: %v", err)
	return &Config{}
}

// Factory implements the SDK's ConfigFactory; register it with
// network.RegisterNetworkFilterConfigFactory(pluginconfig.PluginTCP, Factory{}).
type Factory struct{}

// CreateFactoryFromConfig runs on every new connection (the SDK does not
// cache it), so it only type-asserts.
func (Factory) CreateFactoryFromConfig(config interface{}) FilterFactory {
	if cfg, ok := config.(*Config); ok && cfg != nil {
		return cfg
	}
	return passThrough{}
}

// FilterFactory mirrors the SDK's network.FilterFactory, which lives in the
// cgo package that cannot be imported by tests.
type FilterFactory interface {
	CreateFilter(cb api.ConnectionCallback) api.DownstreamFilter
}

type passThrough struct{}

func (passThrough) CreateFilter(api.ConnectionCallback) api.DownstreamFilter {
	return &api.EmptyDownstreamFilter{}
}

// Options are the process-level collaborators; zero values mean the
// process-wide defaults (tests inject their own).
type Options struct {
	Scheduler *Scheduler
	Table     *workloads.Table // nil: from config's workload_discovery, else empty
}

// Config is one filter config (one listener), shared by all its
// connections. The zero Config is the pass-through of a rejected config.
type Config struct {
	c        *pluginconfig.Compiled
	registry *telemetry.Registry
	sched    *Scheduler
	table    *workloads.Table
	period   int64 // ns
	envLocal *telemetry.Peer
	peers    [16]peerCacheShard
}

type peerCacheShard struct {
	mu sync.Mutex
	m  map[*workloads.Workload]*telemetry.Peer
	_  [48]byte
}

// emptyTable serves configs without workload discovery: every peer unknown.
var emptyTable = workloads.NewTable(1)

// NewConfig builds the runtime config. Configs with the HTTP filter's metric
// settings share its registry (pluginconfig.Compiled.Registry).
func NewConfig(c *pluginconfig.Compiled, opts Options) (*Config, error) {
	if c.Direction == "" {
		return nil, errString("plugin_config: leanmesh-tcp needs a direction (inbound, outbound or gateway)")
	}
	cfg := &Config{
		c:        c,
		registry: c.Registry(),
		sched:    opts.Scheduler,
		table:    opts.Table,
		period:   int64(c.TCPReporting),
	}
	if cfg.table == nil {
		cfg.table = emptyTable
		if wd := c.TCP.WorkloadDiscovery; wd != nil {
			cl, err := workloads.Subscribe(workloads.ClientOptions{
				Address: wd.Address, TokenPath: wd.TokenPath, CAFile: wd.CA, Plaintext: wd.Plaintext,
				MaxEntries: wd.MaxEntries, Logf: api.LogWarnf,
			})
			if err != nil {
				return nil, err
			}
			cfg.table = cl.Table()
		}
	}
	if cfg.sched == nil {
		cfg.sched = Default()
		defer cfg.sched.startLoop()
	}
	cfg.sched.notePeriod(min(time.Duration(cfg.period), time.Second))
	cfg.envLocal = envLocal(c, cfg.registry)
	return cfg, nil
}

// envLocal is the proxy's identity from the sidecar environment, as the HTTP
// filter builds it; nil when the environment does not describe a workload.
func envLocal(c *pluginconfig.Compiled, reg *telemetry.Registry) *telemetry.Peer {
	typ := "sidecar"
	if c.Direction == pluginconfig.Gateway {
		typ = "router"
	}
	labels, err := peer.ReadPodLabels(c.LocalIdentity.PodLabelsPath)
	if err != nil {
		return nil
	}
	node, err := peer.NodeFromEnv(os.Environ(), labels, peer.EnvNodeOptions{Type: typ, ClusterDomain: c.LocalIdentity.ClusterDomain})
	if err != nil {
		return nil
	}
	mx, err := peer.LocalFromNode(node, peer.EncodeOptions{})
	if err != nil {
		return nil
	}
	w := mx.Workload
	return reg.InternPeer(telemetry.Peer{
		Workload: w.Name, Namespace: w.Namespace, CanonicalService: w.CanonicalService,
		CanonicalRevision: w.CanonicalRevision, App: w.App, Version: w.Version, Cluster: w.Cluster,
	})
}

// Destroy: series stay in the registry so counters never go backwards.
func (cfg *Config) Destroy() {}

// Registry exposes the config's registry (tests, benchmarks).
func (cfg *Config) Registry() *telemetry.Registry { return cfg.registry }

// CreateFilter implements FilterFactory.
func (cfg *Config) CreateFilter(cb api.ConnectionCallback) api.DownstreamFilter {
	if cfg.c == nil {
		return &api.EmptyDownstreamFilter{}
	}
	return &conn{cfg: cfg, cb: cb}
}

// lookupPeer maps an address to its interned label dimensions; nil when
// unknown.
func (cfg *Config) lookupPeer(a netip.Addr) *telemetry.Peer {
	if !a.IsValid() {
		return nil
	}
	w := cfg.table.Lookup(a)
	if w == nil {
		return nil
	}
	return cfg.dims(w)
}

// localPeer prefers the environment (what the HTTP filter reports) and falls
// back to the table entry of our own address.
func (cfg *Config) localPeer(self netip.Addr) *telemetry.Peer {
	if cfg.envLocal != nil {
		return cfg.envLocal
	}
	if p := cfg.lookupPeer(self); p != nil {
		return p
	}
	return cfg.dims(nil)
}

const maxPeerCache = 4096 // per shard; the table interns workloads, so this is per distinct identity

// dims interns w's labels once per distinct *Workload (the table shares one
// pointer per identity), so a new connection costs a map lookup.
func (cfg *Config) dims(w *workloads.Workload) *telemetry.Peer {
	sh := &cfg.peers[uintptr(unsafePointer(w))>>5&15]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if p, ok := sh.m[w]; ok {
		return p
	}
	if sh.m == nil || len(sh.m) >= maxPeerCache {
		sh.m = map[*workloads.Workload]*telemetry.Peer{}
	}
	var tp telemetry.Peer
	if w != nil {
		tp = telemetry.Peer{
			Workload: w.Name, Namespace: w.Namespace, CanonicalService: w.CanonicalService,
			CanonicalRevision: w.CanonicalRevision, App: w.App, Version: w.Version, Cluster: w.Cluster,
		}
	}
	p := cfg.registry.InternPeer(tp)
	sh.m[w] = p
	return p
}

type errString string

func (e errString) Error() string { return string(e) }

// Log-once helpers: every occurrence is counted, the first of a kind logged.
var logged sync.Map

var logf = api.LogWarnf // replaced in tests that run without a host

func logOnce(kind, format string, args ...interface{}) {
	if _, dup := logged.LoadOrStore(kind, true); !dup {
		logf(format, args...)
	}
}
