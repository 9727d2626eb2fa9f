// Package pluginconfig parses the plugin_config of leanmesh's filters. It is
// pure Go so that the controller validates every config it renders with
// exactly the parser the filter runs: a config the filter would reject makes
// Envoy reject the whole listener update.
package pluginconfig

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	xdsv3 "github.com/cncf/xds/go/xds/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/leanmesh/leanmesh/filters/peer"
	"github.com/leanmesh/leanmesh/filters/telemetry"
)

// The names the library's filters register under (filters/cmd/leanmesh) and
// the controller's EnvoyFilters ask for (controller/render).
const (
	PluginHTTP = "leanmesh"
	PluginTCP  = "leanmesh-tcp"
)

// Direction is where the filter sits.
type Direction string

const (
	Inbound  Direction = "inbound"  // server sidecar, reporter="destination"
	Outbound Direction = "outbound" // client sidecar, reporter="source"
	Gateway  Direction = "gateway"  // ingress/egress gateway: outbound toward the mesh, reporter="source"
)

// MXSendPolicy says toward which upstreams the client side sends its
// metadata-exchange headers.
type MXSendPolicy string

const (
	// SendInMesh (default) sends only to outbound clusters of mesh services:
	// never to PassthroughCluster, BlackHoleCluster or clusters marked
	// external or istio.disable_mx.
	SendInMesh MXSendPolicy = "in_mesh"
	// SendAll is Istio 1.29's default: everything except istio.disable_mx.
	SendAll MXSendPolicy = "all"
)

// Config is the parsed plugin_config. JSON field names are the config's
// vocabulary (snake_case, as Istio's stats.PluginConfig).
type Config struct {
	Direction Direction `json:"direction"`
	// DisableHostHeaderFallback: nil means Istio's default, true for inbound
	// and gateways, false for outbound.
	DisableHostHeaderFallback *bool            `json:"disable_host_header_fallback,omitempty"`
	HistogramBuckets          []float64        `json:"histogram_buckets,omitempty"`
	MaxSeries                 int              `json:"max_series,omitempty"`
	Metrics                   []MetricOverride `json:"metrics,omitempty"`
	MetadataExchange          MetadataExchange `json:"metadata_exchange"`
	GRPCMessageCounts         *bool            `json:"grpc_message_counts,omitempty"`
	Exposition                Exposition       `json:"exposition"`
	TCPReportingDuration      string           `json:"tcp_reporting_duration,omitempty"` // e.g. "5s"
	// IstioVersion overrides the tag of Shadow's leanmesh_shadow_istio_build
	// (tests). Empty: the proxy's own ISTIO_VERSION, as Istio's stats filter
	// reports it. The unprefixed istio_build is Istio's alone.
	IstioVersion string `json:"istio_version,omitempty"`
	// MetricPrefix is prepended to every family leanmesh records (Shadow
	// mode renders ShadowMetricPrefix, so Istio's queries never match
	// leanmesh's copy of the same traffic). Empty: Istio's exact names.
	MetricPrefix  string        `json:"metric_prefix,omitempty"`
	LocalIdentity LocalIdentity `json:"local_identity"`
	TCP           TCP           `json:"tcp"` // the leanmesh-tcp network filter only (tcp.go)
	// StatsEvictionInterval removes a label set that has not been recorded
	// for this long (after a scrape saw its final value), as Istio's
	// sidecar.istio.io/statsEvictionInterval does for Envoy's stats: "10m";
	// "" or "0s" keeps series forever (the default, as in Istio).
	StatsEvictionInterval string `json:"stats_eviction_interval,omitempty"`
	// NativeHistograms also keeps the histograms as Prometheus native
	// histograms, served in the protobuf exposition to scrapers that ask for
	// it; the text exposition stays classic.
	NativeHistograms *NativeHistograms `json:"native_histograms,omitempty"`
	// Budgets bound what traffic can make the registry hold or the scrape
	// carry; beyond them new label sets fold into the overflow series.
	MaxSeriesBytes      int `json:"max_series_bytes,omitempty"`
	MaxExpositionBytes  int `json:"max_exposition_bytes,omitempty"`
	MaxLabelValueLength int `json:"max_label_value_length,omitempty"`
}

// NativeHistograms configures native histograms.
type NativeHistograms struct {
	// Schema is the bucket resolution, Prometheus' -4..8: bucket bounds grow
	// by 2^(2^-schema), so 3 (the default) means ~9% wide buckets.
	Schema *int `json:"schema,omitempty"`
}

// LocalIdentity says where the proxy's own identity comes from when Envoy
// does not expose its node to Go filters (v1.39 does not): the sidecar's
// environment and the downward-API labels file, as pilot-agent reads them.
type LocalIdentity struct {
	PodLabelsPath string `json:"pod_labels_path,omitempty"` // default /etc/istio/pod/labels
	ClusterDomain string `json:"cluster_domain,omitempty"`  // default cluster.local
}

// MetricOverride mirrors stats.PluginConfig's metrics entries.
type MetricOverride struct {
	Name         string            `json:"name,omitempty"`
	Drop         bool              `json:"drop,omitempty"`
	TagsToRemove []string          `json:"tags_to_remove,omitempty"`
	Dimensions   map[string]string `json:"dimensions,omitempty"`
}

// MXMode says how much of the exchange the filter does itself.
type MXMode string

const (
	// MXExchange (default): add our headers toward the mesh, read and strip
	// the peer's, echo on inbound responses. Istio's istio.metadata_exchange
	// filter is removed for the workload (LeanMesh mode).
	MXExchange MXMode = "exchange"
	// MXObserve: only read the peer's headers; add, strip and echo nothing.
	// Istio's own MX filter stays and does the exchange (Shadow mode).
	MXObserve MXMode = "observe"
	// MXOff: no exchange; peers come from endpoint metadata or are unknown.
	MXOff MXMode = "off"
)

// MetadataExchange configures the in-filter MX.
type MetadataExchange struct {
	Mode MXMode `json:"mode,omitempty"`
	// SendTo: "in_mesh" (default) or "all".
	SendTo MXSendPolicy `json:"send_to,omitempty"`
	// PeerCacheSize bounds each worker's peer cache (default 500, as Istio).
	PeerCacheSize int `json:"peer_cache_size,omitempty"`
	// CertificatePrincipalsOnly: the client side's destination_principal
	// comes only from the upstream certificate, never from the peer's
	// exchanged IDENTITY (Istio's default falls back to it; so does leanmesh
	// unless this is set). The server side is certificate-only either way.
	CertificatePrincipalsOnly bool `json:"certificate_principals_only,omitempty"`
}

// ShadowMetricPrefix is the family-name prefix of Shadow-mode series:
// leanmesh_shadow_istio_requests_total and so on.
const ShadowMetricPrefix = "leanmesh_shadow_"

// Exposition configures scrape answering: a config with Enabled answers
// requests for Path on its listener with the Prometheus text of the
// process-wide registry, and records no telemetry itself.
type Exposition struct {
	Enabled bool   `json:"enabled,omitempty"`
	Path    string `json:"path,omitempty"`
}

// Defaults.
const (
	// DefaultPeerCacheSize is Istio's per-thread peer cache size, declared
	// once in the package that owns the cache.
	DefaultPeerCacheSize = peer.DefaultCacheSize
	// MaxPeerCacheSize equals the CRD's maximum for
	// spec.metadataExchange.peerCacheSize (controller/api/v1alpha1's
	// TestCRDBoundsMatchParser compares them).
	DefaultExpositionPath       = "/stats/prometheus"
	DefaultTCPReportingDuration = 5 * time.Second
	MaxPeerCacheSize            = 100000
	// MaxHistogramBuckets equals the CRD's maxItems for
	// spec.histogramBuckets (compared by the same test).
	MaxHistogramBuckets      = 64
	DefaultNativeSchema      = 3
	MinStatsEvictionInterval = time.Second
)

// Compiled is a validated Config with derived values.
type Compiled struct {
	Config
	Reporter                  telemetry.Reporter
	DisableHostHeaderFallback bool
	GRPCMessageCounts         bool
	TCPReporting              time.Duration
	Overrides                 *telemetry.Overrides
	Dimensions                []Attribute   // one per Overrides.Expressions entry
	StatsEviction             time.Duration // 0: never
	NativeHistogramsEnabled   bool
	NativeSchema              int
}

// FromAny parses an xds.type.v3.TypedStruct (or a bare google.protobuf.Struct)
// as Envoy hands plugin_config to the filter.
func FromAny(a *anypb.Any) (*Compiled, error) {
	if a == nil {
		return nil, fmt.Errorf("plugin_config: missing")
	}
	var s *structpb.Struct
	switch a.GetTypeUrl() {
	case "type.googleapis.com/xds.type.v3.TypedStruct", "type.googleapis.com/udpa.type.v1.TypedStruct":
		ts := &xdsv3.TypedStruct{}
		if err := a.UnmarshalTo(ts); err != nil {
			// udpa's TypedStruct has the same wire shape.
			return nil, fmt.Errorf("plugin_config: not a TypedStruct: %v", err)
		}
		s = ts.GetValue()
	case "type.googleapis.com/google.protobuf.Struct":
		s = &structpb.Struct{}
		if err := a.UnmarshalTo(s); err != nil {
			return nil, fmt.Errorf("plugin_config: not a Struct: %v", err)
		}
	default:
		return nil, fmt.Errorf("plugin_config: unsupported type %q (want xds.type.v3.TypedStruct)", a.GetTypeUrl())
	}
	return FromStruct(s)
}

// FromStruct parses the TypedStruct's value.
func FromStruct(s *structpb.Struct) (*Compiled, error) {
	if s == nil {
		s = &structpb.Struct{}
	}
	b, err := s.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("plugin_config: %v", err)
	}
	return FromJSON(b)
}

// FromJSON parses and validates; unknown fields are errors naming the field.
func FromJSON(b []byte) (*Compiled, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("plugin_config: %s", cleanJSONError(err))
	}
	return Compile(c)
}

func cleanJSONError(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "json: ")
	if ute, ok := err.(*json.UnmarshalTypeError); ok {
		return fmt.Sprintf("field %q: want %s, got %s", ute.Field, ute.Type, ute.Value)
	}
	return msg
}

// Compile validates c and derives the runtime values.
func Compile(c Config) (*Compiled, error) {
	out := &Compiled{Config: c}
	switch c.Direction {
	case Outbound:
		out.Reporter = telemetry.ReporterSource
	case Gateway:
		out.Reporter = telemetry.ReporterSource
		out.DisableHostHeaderFallback = true
	case Inbound:
		out.Reporter = telemetry.ReporterDestination
		out.DisableHostHeaderFallback = true
	case "":
		if !c.Exposition.Enabled {
			return nil, fmt.Errorf("plugin_config: field \"direction\" is required (inbound, outbound or gateway)")
		}
	default:
		return nil, fmt.Errorf("plugin_config: field \"direction\": %q is not inbound, outbound or gateway", c.Direction)
	}
	if c.DisableHostHeaderFallback != nil {
		out.DisableHostHeaderFallback = *c.DisableHostHeaderFallback
	}
	out.GRPCMessageCounts = c.GRPCMessageCounts == nil || *c.GRPCMessageCounts
	for i, b := range c.HistogramBuckets {
		if !(b > 0) {
			return nil, fmt.Errorf("plugin_config: field \"histogram_buckets[%d]\": bound %v must be > 0", i, b)
		}
		if i > 0 && b <= c.HistogramBuckets[i-1] {
			return nil, fmt.Errorf("plugin_config: field \"histogram_buckets[%d]\": bounds must increase", i)
		}
	}
	if len(c.HistogramBuckets) > MaxHistogramBuckets {
		return nil, fmt.Errorf("plugin_config: field \"histogram_buckets\": at most %d bounds", MaxHistogramBuckets)
	}
	if p := c.MetricPrefix; p != "" && !validMetricPrefix(p) {
		return nil, fmt.Errorf("plugin_config: field \"metric_prefix\": %q is not a Prometheus metric name prefix ([a-zA-Z_][a-zA-Z0-9_]*)", p)
	}
	if c.MaxSeries < 0 {
		return nil, fmt.Errorf("plugin_config: field \"max_series\": must be >= 0")
	}
	switch c.MetadataExchange.Mode {
	case "":
		out.MetadataExchange.Mode = MXExchange
	case MXExchange, MXObserve, MXOff:
	default:
		return nil, fmt.Errorf("plugin_config: field \"metadata_exchange.mode\": %q is not exchange, observe or off", c.MetadataExchange.Mode)
	}
	switch c.MetadataExchange.SendTo {
	case "":
		out.MetadataExchange.SendTo = SendInMesh
	case SendInMesh, SendAll:
	default:
		return nil, fmt.Errorf("plugin_config: field \"metadata_exchange.send_to\": %q is not in_mesh or all", c.MetadataExchange.SendTo)
	}
	switch n := c.MetadataExchange.PeerCacheSize; {
	case n == 0:
		out.MetadataExchange.PeerCacheSize = DefaultPeerCacheSize
	case n < 0 || n > MaxPeerCacheSize:
		return nil, fmt.Errorf("plugin_config: field \"metadata_exchange.peer_cache_size\": %d outside 1..%d", n, MaxPeerCacheSize)
	}
	if out.LocalIdentity.PodLabelsPath == "" {
		out.LocalIdentity.PodLabelsPath = "/etc/istio/pod/labels"
	}
	if out.LocalIdentity.ClusterDomain == "" {
		out.LocalIdentity.ClusterDomain = "cluster.local"
	}
	if err := compileTCP(&out.TCP); err != nil {
		return nil, err
	}
	if c.Exposition.Enabled && c.Exposition.Path == "" {
		out.Exposition.Path = DefaultExpositionPath
	}
	if c.Exposition.Path != "" && !strings.HasPrefix(c.Exposition.Path, "/") {
		return nil, fmt.Errorf("plugin_config: field \"exposition.path\": %q must start with /", c.Exposition.Path)
	}
	out.TCPReporting = DefaultTCPReportingDuration
	if c.TCPReportingDuration != "" {
		d, err := time.ParseDuration(c.TCPReportingDuration)
		if err != nil || d < 100*time.Millisecond {
			return nil, fmt.Errorf("plugin_config: field \"tcp_reporting_duration\": %q is not a duration of at least 100ms", c.TCPReportingDuration)
		}
		out.TCPReporting = d
	}
	if v := c.StatsEvictionInterval; v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d != 0 && d < MinStatsEvictionInterval {
			return nil, fmt.Errorf("plugin_config: field \"stats_eviction_interval\": %q is not 0s or a duration of at least %s", v, MinStatsEvictionInterval)
		}
		out.StatsEviction = d
	}
	if nh := c.NativeHistograms; nh != nil {
		out.NativeHistogramsEnabled = true
		out.NativeSchema = DefaultNativeSchema
		if nh.Schema != nil {
			if *nh.Schema < telemetry.MinNativeSchema || *nh.Schema > telemetry.MaxNativeSchema {
				return nil, fmt.Errorf("plugin_config: field \"native_histograms.schema\": %d outside %d..%d", *nh.Schema, telemetry.MinNativeSchema, telemetry.MaxNativeSchema)
			}
			out.NativeSchema = *nh.Schema
		}
	}
	for _, b := range []struct {
		name string
		v    int
	}{{"max_series_bytes", c.MaxSeriesBytes}, {"max_exposition_bytes", c.MaxExpositionBytes}, {"max_label_value_length", c.MaxLabelValueLength}} {
		if b.v < 0 {
			return nil, fmt.Errorf("plugin_config: field %q: must be >= 0", b.name)
		}
	}
	if n := c.MaxLabelValueLength; n != 0 && n < telemetry.MinLabelValueLength {
		return nil, fmt.Errorf("plugin_config: field \"max_label_value_length\": %d is below %d", n, telemetry.MinLabelValueLength)
	}
	mos := make([]telemetry.MetricOverride, len(c.Metrics))
	for i, m := range c.Metrics {
		mos[i] = telemetry.MetricOverride{Name: m.Name, Drop: m.Drop, TagsToRemove: m.TagsToRemove, Dimensions: m.Dimensions}
	}
	ov, err := telemetry.CompileOverrides(mos)
	if err != nil {
		return nil, fmt.Errorf("plugin_config: field %s", err)
	}
	out.Overrides = ov
	for _, expr := range ov.Expressions {
		a, err := ParseAttribute(expr)
		if err != nil {
			return nil, fmt.Errorf("plugin_config: field \"metrics[].dimensions\": %v", err)
		}
		out.Dimensions = append(out.Dimensions, a)
	}
	return out, nil
}

// Registry returns the process-wide registry for c's metric settings:
// configs (HTTP and TCP, any direction) with equal settings share one.
func (c *Compiled) Registry() *telemetry.Registry {
	fp, _ := json.Marshal(struct {
		B  []float64
		M  int
		O  []MetricOverride
		E  time.Duration
		N  bool
		NS int
		SB int
		EB int
		LL int
		P  string
	}{c.HistogramBuckets, c.MaxSeries, c.Metrics, c.StatsEviction, c.NativeHistogramsEnabled, c.NativeSchema,
		c.MaxSeriesBytes, c.MaxExpositionBytes, c.MaxLabelValueLength, c.MetricPrefix})
	return telemetry.Shared(string(fp), telemetry.Options{
		Buckets: c.HistogramBuckets, MaxSeries: c.MaxSeries, Overrides: c.Overrides, IstioVersion: c.IstioVersion,
		MaxSeriesBytes: c.MaxSeriesBytes, MaxExpositionBytes: c.MaxExpositionBytes, MaxLabelValueLength: c.MaxLabelValueLength,
		EvictionInterval: c.StatsEviction, NativeHistograms: c.NativeHistogramsEnabled, NativeSchema: c.NativeSchema,
		NamePrefix: c.MetricPrefix,
	})
}

func validMetricPrefix(p string) bool {
	for i := 0; i < len(p); i++ {
		c := p[i]
		letter := c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		if !letter && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return true
}
