// Package httpstats is leanmesh's HTTP filter: Istio's standard HTTP metrics
// and Istio-compatible metadata exchange in one filter (the "tstats" idea),
// plus the scrape endpoint. It imports only the SDK's pure-Go api package, so
// it is tested with fakes; filters/cmd/leanmesh registers it with Envoy.
package httpstats

import (
	"os"

	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/leanmesh/leanmesh/filters/peer"
	"github.com/leanmesh/leanmesh/filters/pluginconfig"
	"github.com/leanmesh/leanmesh/filters/telemetry"
)

// Parser implements api.StreamFilterConfigParser.
type Parser struct{}

// Parse validates plugin_config; an error makes Envoy reject the listener,
// so the controller runs the same pluginconfig parser before rendering.
func (Parser) Parse(a *anypb.Any, _ api.ConfigCallbackHandler) (interface{}, error) {
	c, err := pluginconfig.FromAny(a)
	if err != nil {
		telemetry.Self.Counter("leanmesh_config_rejected_total", "", "").Add(1)
		return nil, err
	}
	return NewConfig(c), nil
}

// Merge: leanmesh has no per-route settings; the listener config holds.
func (Parser) Merge(parent, child interface{}) interface{} {
	if _, ok := child.(*Config); ok {
		return child
	}
	return parent
}

// Config is one filter config (one listener context), shared by all its
// streams on every worker.
type Config struct {
	c        *pluginconfig.Compiled
	registry *telemetry.Registry
	local    atomic.Pointer[localState]
	envNode  *peer.Node // the node rebuilt from the sidecar's environment
	envErr   error
	workers  [numWorkers]workerState
}

const numWorkers = 64 // Envoy worker ids map onto these modulo 64

type localState struct {
	mx   *peer.Local
	peer *telemetry.Peer
	node *peer.Node // the node the identity came from; nil if none
}

// workerState is touched by one Envoy worker thread; the mutex only guards
// against worker ids that collide modulo numWorkers, so it is uncontended.
// Each is padded to workerStride bytes so that two workers never write the
// same cache line: with the hot fields in the first 64 bytes and a 128-byte
// stride, no line holds fields of two workers whatever the array's alignment
// (128 also covers x86's adjacent-line prefetch). TestWorkerStatePadding
// checks the sizes.
type workerState struct {
	workerFields
	_ [workerStride - unsafe.Sizeof(workerFields{})%workerStride]byte
}

const workerStride = 128

type workerFields struct {
	mu       sync.Mutex
	peers    *peer.Cache
	dims     map[*peer.Workload]*telemetry.Peer
	clusters map[string]*clusterInfo
	flags    flagStrings
}

// NewConfig builds the runtime config; configs with equal metric settings
// share one process-wide registry.
func NewConfig(c *pluginconfig.Compiled) *Config {
	cfg := &Config{c: c}
	if !c.Exposition.Enabled {
		// The scrape endpoint records nothing (it serves every shared
		// registry): it must not add a registry of its own, whose
		// unprefixed istio_build would show up beside Shadow's.
		cfg.registry = c.Registry()
	}
	typ := "sidecar"
	if c.Direction == pluginconfig.Gateway {
		typ = "router"
	}
	labels, err := peer.ReadPodLabels(c.LocalIdentity.PodLabelsPath)
	if err == nil {
		cfg.envNode, err = peer.NodeFromEnv(os.Environ(), labels, peer.EnvNodeOptions{Type: typ, ClusterDomain: c.LocalIdentity.ClusterDomain})
	}
	cfg.envErr = err
	for i := range cfg.workers {
		cfg.workers[i].peers = peer.NewCache(c.MetadataExchange.PeerCacheSize)
	}
	return cfg
}

// Destroy is called by Envoy when the config is dropped; nothing to free:
// series stay in the registry so counters never go backwards.
func (cfg *Config) Destroy() {}

// Registry exposes the config's registry (tests, benchmarks).
func (cfg *Config) Registry() *telemetry.Registry { return cfg.registry }

// localIdentity returns the proxy's identity, resolved on the first
// request of the config and then cached: the node Envoy exposes as
// `xds.node` when it does (Envoy v1.39's golang filter does not), else the
// node rebuilt from the sidecar's environment. Both are constant for the
// process, so a failure is cached too (an empty local identity).
func (cfg *Config) localIdentity(cb api.StreamFilterCallbacks) *localState {
	if l := cfg.local.Load(); l != nil {
		return l
	}
	cfg.local.CompareAndSwap(nil, cfg.resolveLocal(cb))
	return cfg.local.Load()
}

func (cfg *Config) resolveLocal(cb api.StreamFilterCallbacks) *localState {
	node := cfg.envNode
	if raw, err := cb.GetProperty("xds.node"); err == nil {
		if n, err := peer.NodeFromProto([]byte(raw)); err == nil {
			node = n
		}
	}
	if cfg.c.IstioVersion == "" {
		cfg.registry.SetIstioVersion(proxyIstioVersion(node))
	}
	if node == nil {
		countOnce("local_identity_unavailable", cfg.envErr)
		return &localState{peer: cfg.registry.InternPeer(telemetry.Peer{})}
	}
	mx, err := peer.LocalFromNode(node, peer.EncodeOptions{})
	if err != nil {
		countOnce("local_identity_invalid", err)
		return &localState{peer: cfg.registry.InternPeer(telemetry.Peer{})}
	}
	w := mx.Workload
	l := &localState{mx: mx, node: node, peer: cfg.registry.InternPeer(telemetry.Peer{
		Workload: w.Name, Namespace: w.Namespace, CanonicalService: w.CanonicalService,
		CanonicalRevision: w.CanonicalRevision, App: w.App, Version: w.Version, Cluster: w.Cluster,
	})}
	return l
}

// nodeProperty answers a custom dimension's `xds.node.id` or
// `xds.node.metadata.<key>[.<key>...]` (a string leaf) from the node the local
// identity came from, as Istio's stats filter evaluates `xds.node` against
// the proxy's own node: Envoy v1.39's golang filter answers "not found" for
// every xds.node path, so GetProperty would leave such a dimension empty
// (istio/proxy's TestStatsGrpcStream dimension
// configurable_metric_a: xds.node.metadata.LABELS.version). false: not a
// path this answers; the caller asks Envoy.
func nodeProperty(node *peer.Node, path string) (string, bool) {
	if node == nil {
		return "", false
	}
	if path == "xds.node.id" {
		return node.ID, true
	}
	rest, ok := strings.CutPrefix(path, "xds.node.metadata.")
	if !ok {
		return "", false
	}
	fields := node.Metadata.GetFields()
	for {
		key, tail, more := strings.Cut(rest, ".")
		v, ok := fields[key]
		if !ok {
			return "", false
		}
		if !more {
			s, isString := v.GetKind().(*structpb.Value_StringValue)
			if !isString {
				return "", false
			}
			return s.StringValue, true
		}
		if v.GetStructValue() == nil {
			return "", false
		}
		fields, rest = v.GetStructValue().GetFields(), tail
	}
}

// proxyIstioVersion is istio_build's tag: the ISTIO_VERSION of the running
// proxy's node, as Istio's stats filter reads it (istio_stats.cc
// recordVersion). The node comes from `xds.node` when Envoy exposes it, or
// the sidecar environment (ISTIO_META_ISTIO_VERSION, when set); otherwise
// from the bootstrap pilot-agent wrote, which carries pilot-agent's own
// version. "" (reported as "unknown", as Istio does) if none has it.
func proxyIstioVersion(node *peer.Node) string {
	if node != nil {
		if v := node.Metadata.GetFields()[peer.KeyIstioVersion].GetStringValue(); v != "" {
			return v
		}
	}
	v, err := peer.ProcessIstioVersion()
	if err != nil {
		countOnce("istio_version_unavailable", err)
	}
	return v
}

// peerDims turns a cached workload into its interned label dimensions. The
// map is keyed by the cache's pointer (a lookup without allocation); entries
// of evicted workloads are dropped in bulk when it outgrows the cache.
// withIdentity keeps the peer's exchanged IDENTITY for the client side's
// destination_principal fallback (off with certificate_principals_only).
func (w *workerState) peerDims(reg *telemetry.Registry, wl *peer.Workload, capacity int, withIdentity bool) *telemetry.Peer {
	if p, ok := w.dims[wl]; ok {
		return p
	}
	if w.dims == nil || len(w.dims) >= 2*capacity+16 {
		w.dims = map[*peer.Workload]*telemetry.Peer{}
	}
	dims := telemetry.Peer{
		Workload: wl.Name, Namespace: wl.Namespace, CanonicalService: wl.CanonicalService,
		CanonicalRevision: wl.CanonicalRevision, App: wl.App, Version: wl.Version, Cluster: wl.Cluster,
	}
	if withIdentity {
		dims.Identity = wl.Identity
	}
	p := reg.InternPeer(dims)
	w.dims[wl] = p
	return p
}

const maxClusters = 4096

// cluster returns the worker's cached view of cluster name's metadata. name
// may be borrowed (Reader): it is copied before the metadata read, which
// reuses Envoy's scratch string.
func (w *workerState) cluster(cb api.StreamFilterCallbacks, name string) *clusterInfo {
	if ci, ok := w.clusters[name]; ok {
		return ci
	}
	name = strings.Clone(name)
	raw, _ := cb.GetProperty("xds.cluster_metadata")
	ci := decodeClusterInfo(name, []byte(raw))
	if w.clusters == nil || len(w.clusters) >= maxClusters {
		w.clusters = map[string]*clusterInfo{}
	}
	w.clusters[name] = ci
	return ci
}

// countOnce counts a malformed input every time and logs it once per kind,
// so a flood cannot flood the log. Panics: see filters/panicsafe.
var logged sync.Map

func countOnce(kind string, err error) {
	telemetry.Self.Counter("leanmesh_errors_total", "kind", kind).Add(1)
	if _, dup := logged.LoadOrStore(kind, true); !dup {
		api.LogWarnf("leanmesh: %s: %v (logged once; see leanmesh_errors_total)", kind, err)
	}
}
