// Package render turns a TelemetryPolicy into the Istio objects that install
// or remove leanmesh's telemetry: EnvoyFilters patching the proxies'
// listeners. It is pure: the same input always gives the same objects, no API
// calls. The controller applies what it returns; `leanmesh render` writes it
// as plain manifests.
//
// Placement (see docs/metadata-exchange.md and docs/tcp.md):
//   - LeanMesh (hybrid): leanmesh owns HTTP and gRPC, Istio keeps TCP. Per
//     context, in every HTTP connection manager: REMOVE the HTTP filters
//     istio.metadata_exchange and istio.stats, INSERT_FIRST leanmesh
//     (metadata_exchange.mode=exchange). No Telemetry resource: istiod's
//     Telemetry API decides stats per provider and listener class, not per
//     protocol (pilot/pkg/model/telemetry.go, generateStatsConfig feeds both
//     buildHTTPTelemetryFilter and buildTCPTelemetryFilter), so disabling
//     metrics there would also strip istio.stats from TCP chains. The network
//     filters istio.stats and istio.metadata_exchange on TCP chains, and the
//     cluster-side TCP exchange, are untouched in every mode.
//   - Shadow: Istio's MX and stats stay; leanmesh observes (mode=observe):
//     inbound INSERT_FIRST (before Istio's MX strips the request headers),
//     outbound and gateway INSERT_BEFORE the router (on the encode path it
//     runs before Istio's MX strips the response headers).
//   - Istio: only the exposition, so a pod's scrape target stays up across
//     mode switches (it then serves leanmesh's own health series; see
//     docs/exposition.md).
//   - TCP: NETWORK_FILTER INSERT_BEFORE tcp_proxy, but only for an Envoy
//     whose golang network filter does not drain the read buffer; today that
//     is none, so a policy listing TCP is invalid (tcp.go, docs/tcp.md).
//   - Exposition: a LISTENER ADD on 0.0.0.0:15095 answering the scrape. In
//     LeanMesh mode a gateway's also carries Istio's istio.stats network
//     filter with every metric dropped, for istio_build alone (istiobuild.go).
package render

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/wellknown"

	"google.golang.org/protobuf/types/known/structpb"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/release"
	"github.com/leanmesh/leanmesh/filters/pluginconfig"
)

// Names shared with the install paths and the filter library (labels live
// in controller/api/v1alpha1).
const (
	LibraryID          = "leanmesh"
	DefaultLibraryPath = "/etc/leanmesh/leanmesh.so"

	ExpositionListener = "leanmesh-prometheus"
	DefaultExposePort  = 15095
	DefaultPriority    = 10

	// Istio's filter names as istiod writes them (pilot/pkg/xds/filters:
	// MxFilterName, StatsFilterName); Envoy's come from go-control-plane's
	// pkg/wellknown.
	IstioMXFilter    = "istio.metadata_exchange"
	IstioStatsFilter = "istio.stats"

	httpGolangType = "type.googleapis.com/envoy.extensions.filters.http.golang.v3alpha.Config"
	netGolangType  = "type.googleapis.com/envoy.extensions.filters.network.golang.v3alpha.Config"
	typedStruct    = "type.googleapis.com/xds.type.v3.TypedStruct"
)

// Input is everything the renderer depends on.
type Input struct {
	Policy *v1alpha1.TelemetryPolicy
	// RootNamespace is Istio's config root namespace: a policy there is
	// mesh-wide.
	RootNamespace string
	Matrix        release.Matrix
	// LibraryPaths are where the library install puts leanmesh.so (the
	// controller's --library-path, from the chart's library.path); a policy
	// must load it from one of them. Empty: only the path's shape is checked.
	LibraryPaths []string
}

// Output is the desired state for one policy.
type Output struct {
	// Objects are *EnvoyFilter, sorted by kind, namespace, name.
	Objects []client.Object
	Release release.Release
	// PodSelector is what a pod must carry to be configured: the policy's
	// labels plus leanmesh.io/envoy-version.
	PodSelector map[string]string
	// Spec is the policy spec with defaults applied.
	Spec v1alpha1.TelemetryPolicySpec
}

// Error is an invalid policy: nothing may be applied for it.
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

func invalid(format string, args ...any) error { return &Error{Msg: fmt.Sprintf(format, args...)} }

// Defaults returns spec with the CRD's defaults applied, so objects that
// never went through the API server (golden tests, `leanmesh render`) render
// the same as stored ones.
func Defaults(spec v1alpha1.TelemetryPolicySpec) v1alpha1.TelemetryPolicySpec {
	s := *spec.DeepCopy()
	if s.Mode == "" {
		s.Mode = v1alpha1.ModeLeanMesh
	}
	if len(s.Protocols) == 0 {
		s.Protocols = []v1alpha1.Protocol{v1alpha1.ProtocolHTTP}
	}
	if len(s.Contexts) == 0 {
		s.Contexts = []v1alpha1.TrafficContext{v1alpha1.ContextInbound, v1alpha1.ContextOutbound}
	}
	if s.Exposition.Enabled == nil {
		t := true
		s.Exposition.Enabled = &t
	}
	if s.Exposition.Port == 0 {
		s.Exposition.Port = DefaultExposePort
	}
	if s.Exposition.Path == "" {
		s.Exposition.Path = pluginconfig.DefaultExpositionPath
	}
	if s.LibraryPath == "" {
		s.LibraryPath = DefaultLibraryPath
	}
	if s.Priority == nil {
		p := int32(DefaultPriority)
		s.Priority = &p
	}
	return s
}

// Render computes the desired objects for in.Policy. An *Error means the
// policy is invalid; nothing should be applied.
func Render(in Input) (*Output, error) {
	p := in.Policy
	if p == nil {
		return nil, invalid("no policy")
	}
	if errs := validation.IsValidLabelValue(p.Name); len(errs) > 0 {
		return nil, invalid("policy name %q must be a valid label value (at most 63 characters): %s", p.Name, strings.Join(errs, "; "))
	}
	spec := Defaults(p.Spec)
	if err := runSpecChecks(in, spec); err != nil {
		return nil, err
	}
	rel, err := in.Matrix.Find(spec.IstioRelease)
	if err != nil {
		return nil, invalid("spec.istioRelease: %v", err)
	}
	if v, ok := spec.Selector.MatchLabels[v1alpha1.LabelEnvoyVersion]; ok && v != rel.Envoy {
		return nil, invalid("spec.selector: %s=%s contradicts Istio %s (Envoy %s)", v1alpha1.LabelEnvoyVersion, v, rel.Istio, rel.Envoy)
	}
	out := &Output{Release: rel, Spec: spec, PodSelector: map[string]string{v1alpha1.LabelEnvoyVersion: rel.Envoy}}
	for k, v := range spec.Selector.MatchLabels {
		out.PodSelector[k] = v
	}
	if spec.Mode != v1alpha1.ModeIstio && spec.Mode != v1alpha1.ModeLeanMesh && spec.Mode != v1alpha1.ModeShadow {
		return nil, invalid("spec.mode: %q is not Istio, LeanMesh or Shadow", spec.Mode)
	}

	r := &renderer{in: in, spec: spec, rel: rel, selector: out.PodSelector}
	r.proxyVersion = spec.ProxyVersion
	if r.proxyVersion == "" {
		r.proxyVersion = rel.ProxyVersionRegex()
	}
	objs, err := r.objects()
	if err != nil {
		return nil, err
	}
	if err := CheckObjectSizes(objs); err != nil {
		return nil, err
	}
	out.Objects = objs
	return out, nil
}

type renderer struct {
	in           Input
	spec         v1alpha1.TelemetryPolicySpec
	rel          release.Release
	selector     map[string]string
	proxyVersion string
}

func (r *renderer) objects() ([]client.Object, error) {
	var objs []client.Object
	contexts := slices.Clone(r.spec.Contexts)
	slices.Sort(contexts)
	contexts = slices.Compact(contexts)

	// Istio mode keeps only the exposition, unchanged from the other modes: a
	// mode switch never removes the listener a scrape target points at.
	// Everything else is still validated, so a later switch cannot surprise.
	istio := r.spec.Mode == v1alpha1.ModeIstio
	if slices.Contains(r.spec.Protocols, v1alpha1.ProtocolHTTP) && !istio {
		var patches []*networkingapi.EnvoyFilter_EnvoyConfigObjectPatch
		for _, c := range contexts {
			ps, err := r.httpPatches(c)
			if err != nil {
				return nil, err
			}
			patches = append(patches, ps...)
		}
		objs = append(objs, r.envoyFilter("http", patches))
	}
	if slices.Contains(r.spec.Protocols, v1alpha1.ProtocolTCP) && !istio {
		// Refuse rather than render a filter that would swallow the
		// connection's bytes: leanmesh must never break a proxy.
		if GolangNetworkFilterDrainsReads(r.rel.Envoy) {
			return nil, invalid("spec.protocols: TCP cannot be installed on Envoy %s (Istio %s): its golang network filter "+
				"drains every read buffer after the Go filter runs (contrib/golang/filters/network/source/golang.cc, Filter::onData), "+
				"so leanmesh-tcp before tcp_proxy would swallow all client bytes; remove TCP from spec.protocols (see docs/tcp.md)",
				r.rel.Envoy, r.rel.Istio)
		}
		var patches []*networkingapi.EnvoyFilter_EnvoyConfigObjectPatch
		for _, c := range contexts {
			p, err := r.tcpPatch(c)
			if err != nil {
				return nil, err
			}
			patches = append(patches, p)
		}
		objs = append(objs, r.envoyFilter("tcp", patches))
	}
	if *r.spec.Exposition.Enabled {
		ef, err := r.exposition(contexts)
		if err != nil {
			return nil, err
		}
		objs = append(objs, ef)
	}
	sort.SliceStable(objs, func(i, j int) bool { return objectKey(objs[i]) < objectKey(objs[j]) })
	return objs, nil
}

func objectKey(o client.Object) string {
	return o.GetObjectKind().GroupVersionKind().Kind + "/" + o.GetNamespace() + "/" + o.GetName()
}

func patchContext(c v1alpha1.TrafficContext) (networkingapi.EnvoyFilter_PatchContext, pluginconfig.Direction) {
	switch c {
	case v1alpha1.ContextInbound:
		return networkingapi.EnvoyFilter_SIDECAR_INBOUND, pluginconfig.Inbound
	case v1alpha1.ContextOutbound:
		return networkingapi.EnvoyFilter_SIDECAR_OUTBOUND, pluginconfig.Outbound
	case v1alpha1.ContextGateway:
		return networkingapi.EnvoyFilter_GATEWAY, pluginconfig.Gateway
	}
	return networkingapi.EnvoyFilter_ANY, ""
}

func (r *renderer) httpPatches(c v1alpha1.TrafficContext) ([]*networkingapi.EnvoyFilter_EnvoyConfigObjectPatch, error) {
	pctx, dir := patchContext(c)
	if dir == "" {
		return nil, invalid("spec.contexts: %q is not inbound, outbound or gateway", c)
	}
	mx := pluginconfig.MXExchange
	if r.spec.Mode == v1alpha1.ModeShadow {
		mx = pluginconfig.MXObserve
	}
	cfg := r.statsConfig(dir)
	cfg.MetadataExchange = pluginconfig.MetadataExchange{Mode: mx, PeerCacheSize: int(r.spec.MetadataExchange.PeerCacheSize),
		CertificatePrincipalsOnly: r.spec.MetadataExchange.CertificatePrincipalsOnly}
	if mx == pluginconfig.MXExchange {
		// Only the exchanging side sends headers; observe mode never does.
		cfg.MetadataExchange.SendTo = pluginconfig.MXSendPolicy(r.spec.MetadataExchange.SendTo)
	}
	filter, err := r.golangFilter(httpGolangType, pluginconfig.PluginHTTP, cfg, false)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c, err)
	}
	hcm := &networkingapi.EnvoyFilter_ListenerMatch_FilterMatch{Name: wellknown.HTTPConnectionManager}
	switch {
	case r.spec.Mode == v1alpha1.ModeLeanMesh:
		// Only HTTP_FILTER patches: they reach the HTTP connection managers
		// and nothing else, so TCP chains keep Istio's stats and exchange.
		remove := func(name string) *networkingapi.EnvoyFilter_EnvoyConfigObjectPatch {
			return &networkingapi.EnvoyFilter_EnvoyConfigObjectPatch{
				ApplyTo: networkingapi.EnvoyFilter_HTTP_FILTER,
				Match: r.listenerMatch(pctx, &networkingapi.EnvoyFilter_ListenerMatch_FilterMatch{
					Name: wellknown.HTTPConnectionManager, SubFilter: &networkingapi.EnvoyFilter_ListenerMatch_SubFilterMatch{Name: name},
				}),
				Patch: &networkingapi.EnvoyFilter_Patch{Operation: networkingapi.EnvoyFilter_Patch_REMOVE},
			}
		}
		return []*networkingapi.EnvoyFilter_EnvoyConfigObjectPatch{
			remove(IstioMXFilter),
			remove(IstioStatsFilter),
			{
				ApplyTo: networkingapi.EnvoyFilter_HTTP_FILTER,
				Match:   r.listenerMatch(pctx, hcm),
				Patch:   &networkingapi.EnvoyFilter_Patch{Operation: networkingapi.EnvoyFilter_Patch_INSERT_FIRST, Value: filter},
			},
		}, nil
	case c == v1alpha1.ContextInbound:
		return []*networkingapi.EnvoyFilter_EnvoyConfigObjectPatch{{
			ApplyTo: networkingapi.EnvoyFilter_HTTP_FILTER,
			Match:   r.listenerMatch(pctx, hcm),
			Patch:   &networkingapi.EnvoyFilter_Patch{Operation: networkingapi.EnvoyFilter_Patch_INSERT_FIRST, Value: filter},
		}}, nil
	default:
		return []*networkingapi.EnvoyFilter_EnvoyConfigObjectPatch{{
			ApplyTo: networkingapi.EnvoyFilter_HTTP_FILTER,
			Match: r.listenerMatch(pctx, &networkingapi.EnvoyFilter_ListenerMatch_FilterMatch{
				Name: wellknown.HTTPConnectionManager, SubFilter: &networkingapi.EnvoyFilter_ListenerMatch_SubFilterMatch{Name: wellknown.Router},
			}),
			Patch: &networkingapi.EnvoyFilter_Patch{Operation: networkingapi.EnvoyFilter_Patch_INSERT_BEFORE, Value: filter},
		}}, nil
	}
}

func (r *renderer) tcpPatch(c v1alpha1.TrafficContext) (*networkingapi.EnvoyFilter_EnvoyConfigObjectPatch, error) {
	pctx, dir := patchContext(c)
	if dir == "" {
		return nil, invalid("spec.contexts: %q is not inbound, outbound or gateway", c)
	}
	cfg := r.statsConfig(dir)
	// TCP peers come from Istio's own TCP exchange, which stays in every mode.
	cfg.MetadataExchange = pluginconfig.MetadataExchange{Mode: pluginconfig.MXOff}
	cfg.TCPReportingDuration = pluginconfig.DefaultTCPReportingDuration.String()
	if d := r.spec.TCPReportingInterval; d != nil {
		cfg.TCPReportingDuration = d.Duration.String()
	}
	filter, err := r.golangFilter(netGolangType, pluginconfig.PluginTCP, cfg, true)
	if err != nil {
		return nil, fmt.Errorf("%s tcp: %w", c, err)
	}
	return &networkingapi.EnvoyFilter_EnvoyConfigObjectPatch{
		ApplyTo: networkingapi.EnvoyFilter_NETWORK_FILTER,
		Match:   r.listenerMatch(pctx, &networkingapi.EnvoyFilter_ListenerMatch_FilterMatch{Name: wellknown.TCPProxy}),
		Patch:   &networkingapi.EnvoyFilter_Patch{Operation: networkingapi.EnvoyFilter_Patch_INSERT_BEFORE, Value: filter},
	}, nil
}

// exposition adds the scrape listener: sidecars get it through
// SIDECAR_OUTBOUND (Istio applies listener ADDs there, not in the inbound
// context), gateways through GATEWAY.
func (r *renderer) exposition(contexts []v1alpha1.TrafficContext) (client.Object, error) {
	cfg := pluginconfig.Config{Exposition: pluginconfig.Exposition{Enabled: true, Path: r.spec.Exposition.Path}}
	filter, err := r.golangFilter(httpGolangType, pluginconfig.PluginHTTP, cfg, false)
	if err != nil {
		return nil, fmt.Errorf("exposition: %w", err)
	}
	hcm := map[string]any{
		"name": wellknown.HTTPConnectionManager,
		"typed_config": map[string]any{
			"@type":       "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
			"stat_prefix": "leanmesh_prometheus",
			"route_config": map[string]any{
				"name": ExpositionListener,
				"virtual_hosts": []any{map[string]any{
					"name":    ExpositionListener,
					"domains": []any{"*"},
					"routes": []any{map[string]any{
						"match":           map[string]any{"prefix": "/"},
						"direct_response": map[string]any{"status": 404},
					}},
				}},
			},
			"http_filters": []any{
				filter.AsMap(),
				map[string]any{"name": wellknown.Router, "typed_config": map[string]any{
					"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
				}},
			},
		},
	}
	listener := func(filters ...any) (*structpb.Struct, error) {
		return structpb.NewStruct(map[string]any{
			"name": ExpositionListener,
			"address": map[string]any{"socket_address": map[string]any{
				"address": "0.0.0.0", "port_value": int(r.spec.Exposition.Port),
			}},
			"filter_chains": []any{map[string]any{"filters": append(filters, hcm)}},
		})
	}
	var ctxs []networkingapi.EnvoyFilter_PatchContext
	for _, c := range contexts {
		pc := networkingapi.EnvoyFilter_SIDECAR_OUTBOUND
		if c == v1alpha1.ContextGateway {
			pc = networkingapi.EnvoyFilter_GATEWAY
		}
		if !slices.Contains(ctxs, pc) {
			ctxs = append(ctxs, pc)
		}
	}
	var patches []*networkingapi.EnvoyFilter_EnvoyConfigObjectPatch
	for _, pc := range ctxs {
		var before []any
		if pc == networkingapi.EnvoyFilter_GATEWAY && r.spec.Mode == v1alpha1.ModeLeanMesh {
			// A gateway's only istio.stats may be the HTTP ones LeanMesh
			// removed: keep Istio's istio_build (istiobuild.go).
			carrier, err := istioBuildCarrier()
			if err != nil {
				return nil, fmt.Errorf("exposition: %w", err)
			}
			before = append(before, carrier)
		}
		value, err := listener(before...)
		if err != nil {
			return nil, err
		}
		patches = append(patches, &networkingapi.EnvoyFilter_EnvoyConfigObjectPatch{
			ApplyTo: networkingapi.EnvoyFilter_LISTENER,
			Match: &networkingapi.EnvoyFilter_EnvoyConfigObjectMatch{
				Context: pc,
				Proxy:   &networkingapi.EnvoyFilter_ProxyMatch{ProxyVersion: r.proxyVersion},
			},
			Patch: &networkingapi.EnvoyFilter_Patch{Operation: networkingapi.EnvoyFilter_Patch_ADD, Value: value},
		})
	}
	return r.envoyFilter("exposition", patches), nil
}

func (r *renderer) listenerMatch(pc networkingapi.EnvoyFilter_PatchContext, f *networkingapi.EnvoyFilter_ListenerMatch_FilterMatch) *networkingapi.EnvoyFilter_EnvoyConfigObjectMatch {
	return &networkingapi.EnvoyFilter_EnvoyConfigObjectMatch{
		Context: pc,
		Proxy:   &networkingapi.EnvoyFilter_ProxyMatch{ProxyVersion: r.proxyVersion},
		ObjectTypes: &networkingapi.EnvoyFilter_EnvoyConfigObjectMatch_Listener{Listener: &networkingapi.EnvoyFilter_ListenerMatch{
			FilterChain: &networkingapi.EnvoyFilter_ListenerMatch_FilterChainMatch{Filter: f},
		}},
	}
}

// statsConfig is the plugin_config shared by the HTTP and TCP filters.
func (r *renderer) statsConfig(dir pluginconfig.Direction) pluginconfig.Config {
	cfg := pluginconfig.Config{
		Direction:         dir,
		HistogramBuckets:  r.spec.HistogramBuckets,
		MaxSeries:         int(r.spec.MaxSeries),
		GRPCMessageCounts: r.spec.GRPCMessageCounts,
		// No istio_version: Shadow's leanmesh_shadow_istio_build reports the
		// running proxy's own ISTIO_VERSION, not the matrix row.
	}
	if r.spec.Mode == v1alpha1.ModeShadow && !r.spec.Shadow.IstioMetricNames {
		// Istio's dashboards and Kiali query istio_* without a job filter:
		// prefixed, leanmesh's copy of the same traffic is never summed in.
		cfg.MetricPrefix = pluginconfig.ShadowMetricPrefix
	}
	if d := r.spec.StatsEvictionInterval; d != nil && d.Duration > 0 {
		cfg.StatsEvictionInterval = d.Duration.String()
	}
	if nh := r.spec.NativeHistograms; nh != nil {
		// Always explicit: an empty object would be dropped from the config.
		s := pluginconfig.DefaultNativeSchema
		if nh.Schema != nil {
			s = int(*nh.Schema)
		}
		cfg.NativeHistograms = &pluginconfig.NativeHistograms{Schema: &s}
	}
	for _, m := range r.spec.Metrics {
		cfg.Metrics = append(cfg.Metrics, pluginconfig.MetricOverride{
			Name: m.Name, Drop: m.Drop, TagsToRemove: m.TagsToRemove, Dimensions: m.Dimensions,
		})
	}
	return cfg
}

// golangFilter builds the filter's patch value after validating its
// plugin_config with the filter's own parser: a config the filter rejects
// would make Envoy reject the whole listener update.
func (r *renderer) golangFilter(typeURL, plugin string, cfg pluginconfig.Config, network bool) (*structpb.Struct, error) {
	value, err := configValue(cfg)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(value)
	if err != nil {
		return nil, err
	}
	if _, err := pluginconfig.FromJSON(raw); err != nil {
		return nil, invalid("%v", err)
	}
	typed := map[string]any{
		"@type":        typeURL,
		"library_id":   LibraryID,
		"library_path": r.spec.LibraryPath,
		"plugin_name":  plugin,
		"plugin_config": map[string]any{
			"@type": typedStruct,
			"value": value,
		},
	}
	if network {
		typed["is_terminal_filter"] = false
	}
	return structpb.NewStruct(map[string]any{"name": plugin, "typed_config": typed})
}

// configValue is cfg as the JSON object the filter parses, without empty
// sub-objects (so rendered configs show only what was set).
func configValue(cfg pluginconfig.Config) (map[string]any, error) {
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok && len(sub) == 0 {
			delete(m, k)
		}
		if s, ok := v.(string); ok && s == "" {
			delete(m, k)
		}
	}
	return m, nil
}

func (r *renderer) meta(name, namespace string) metav1.ObjectMeta {
	labels := map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedBy, v1alpha1.LabelPolicy: r.in.Policy.Name}
	if r.in.Policy.Namespace != "" {
		labels[v1alpha1.LabelPolicyNamespace] = r.in.Policy.Namespace
	}
	if r.spec.IstioRevision != "" {
		labels[v1alpha1.LabelRevision] = r.spec.IstioRevision
	}
	return metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels}
}

func (r *renderer) envoyFilter(suffix string, patches []*networkingapi.EnvoyFilter_EnvoyConfigObjectPatch) *networkingv1alpha3.EnvoyFilter {
	return &networkingv1alpha3.EnvoyFilter{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.istio.io/v1alpha3", Kind: "EnvoyFilter"},
		ObjectMeta: r.meta("leanmesh-"+r.in.Policy.Name+"-"+suffix, r.in.Policy.Namespace),
		Spec: networkingapi.EnvoyFilter{
			WorkloadSelector: &networkingapi.WorkloadSelector{Labels: copyLabels(r.selector)},
			ConfigPatches:    patches,
			Priority:         *r.spec.Priority,
		},
	}
}

func copyLabels(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
