package telemetryapi

import (
	"encoding/json"
	"maps"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingapi "istio.io/api/networking/v1alpha3"
	telemetryapi "istio.io/api/telemetry/v1alpha1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/release"
	"github.com/leanmesh/leanmesh/controller/render"
	"github.com/leanmesh/leanmesh/filters/pluginconfig"
	"github.com/leanmesh/leanmesh/filters/telemetry"
)

// istiodCommit is istio/istio's release-1.31 branch (the default row of
// envoy-build/versions.tsv is Istio 1.31.1) as stored here: the expectations
// below restate, as leanmesh rows, what pilot/pkg/model/telemetry_test.go
// (TestTelemetryFilters) and telemetry_metric_test.go (TestMergeMetrics) at
// that commit expect istiod to put in the stats filter's config.
const istiodCommit = "a8d7012191ebf42bacd48fa72b32a05828e4c564"

// Not replayed, and why:
//   - TestTelemetryFilters "targetRef mismatch no service", "targetRef mismatch
//     wrong service", "targetRef match", "targetRef match cross namespace",
//     "cross namespace wide": targetRefs/waypoint Telemetries; a Telemetry with
//     a selector or targetRefs is a TelemetryConflict for a LeanMesh policy
//     (docs/install.md §6) and leanmesh renders no waypoint config.
//   - TestTelemetryFilters "empty" and TestMergeMetrics "no metrics": a mesh
//     config without defaultProviders.metrics, where istiod builds no stats
//     filter at all. CarryOver does not read the mesh config and assumes
//     Istio's install default, [prometheus] (docs/install.md §6).
//   - Test_appendApplicableTelemetries, TestTracing, TestGetInterval,
//     Test_computedTelemetries_Equal: workload Telemetries, tracing, logging.
//
// Rows whose Istio outcome leanmesh deliberately does not reproduce are kept
// in the table with notCarried: the test checks they are reported on the
// policy (docs/install.md §6 lists them), not that their outcome matches.

// istioEntry is one stats.PluginConfig metrics[] entry istiod writes:
// drop, tags_to_remove and dimensions of one metric ("" = every metric).
type istioEntry struct {
	drop   bool
	remove []string
	dims   map[string]string
}

// side is istiod's config for one direction: off means istiod builds no
// istio.stats filter (every metric absent); otherwise entries by short name.
type side struct {
	off     bool
	entries map[string]istioEntry
}

// scoped is one namespace-wide Telemetry, named "default" as istiod's
// tests name theirs.
type scoped struct {
	ns      string
	metrics []*telemetryapi.Metrics
}

const proxyNS = "default" // the tests' sidecar ConfigNamespace

func TestIstiodExpectations(t *testing.T) {
	prom := []*telemetryapi.ProviderRef{{Name: "prometheus"}}
	// Istio's tag values are bare words (bar, add-override) that Envoy's CEL
	// would read as an attribute or a subtraction; the merge is what these
	// cases test, so the replay writes them as the string literals the words
	// stand for.
	requestCountTags := &telemetryapi.MetricsOverrides{
		Match: match(telemetryapi.MetricSelector_REQUEST_COUNT),
		TagOverrides: map[string]*telemetryapi.MetricsOverrides_TagOverride{
			"remove": {Operation: telemetryapi.MetricsOverrides_TagOverride_REMOVE},
			"add":    {Operation: telemetryapi.MetricsOverrides_TagOverride_UPSERT, Value: "'bar'"},
		},
	}
	allTags := &telemetryapi.MetricsOverrides{TagOverrides: requestCountTags.TagOverrides}
	addOverride := &telemetryapi.MetricsOverrides{
		Match:        match(telemetryapi.MetricSelector_REQUEST_COUNT),
		TagOverrides: map[string]*telemetryapi.MetricsOverrides_TagOverride{"add": {Value: "'add-override'"}},
	}
	disableAll := &telemetryapi.MetricsOverrides{Match: match(telemetryapi.MetricSelector_ALL_METRICS), Disabled: wrapperspb.Bool(true)}
	disableMode := func(mode telemetryapi.WorkloadMode) *telemetryapi.MetricsOverrides {
		return &telemetryapi.MetricsOverrides{Match: &telemetryapi.MetricSelector{MetricMatch: &telemetryapi.MetricSelector_Metric{Metric: telemetryapi.MetricSelector_ALL_METRICS}, Mode: mode}, Disabled: wrapperspb.Bool(true)}
	}
	// "remove" is no standard label: Envoy's istio_stats ignores removing it.
	cfg := side{entries: map[string]istioEntry{"requests_total": {remove: []string{"remove"}, dims: map[string]string{"add": "'bar'"}}}}
	every := func(e istioEntry, except map[string]istioEntry) side {
		s := side{entries: map[string]istioEntry{}}
		for m := telemetry.Metric(0); m <= telemetry.TCPReceivedBytes; m++ {
			s.entries[m.Spec().ShortName] = e
		}
		maps.Copy(s.entries, except)
		return s
	}
	off := side{off: true}
	plain := side{}

	for _, tc := range []struct {
		name       string // istiod's test function and case
		tels       []scoped
		client     side // outbound and gateway (istiod: ClientMetrics)
		server     side // inbound (istiod: ServerMetrics)
		notCarried string
	}{
		// TestTelemetryFilters asserts the outbound (client) filter; istiod
		// builds the inbound one from the same merge (getModes gives both for
		// CLIENT_AND_SERVER), so server is the same side.
		{name: "TestTelemetryFilters/disabled-prometheus",
			tels:   []scoped{{"istio-system", []*telemetryapi.Metrics{{Providers: prom, Overrides: []*telemetryapi.MetricsOverrides{disableAll}}}}},
			client: off, server: off},
		{name: "TestTelemetryFilters/disabled-prometheus-implicit",
			tels:   []scoped{{"istio-system", []*telemetryapi.Metrics{{Providers: prom, Overrides: []*telemetryapi.MetricsOverrides{{Disabled: wrapperspb.Bool(true)}}}}}},
			client: off, server: off},
		{name: "TestTelemetryFilters/disabled-then-empty",
			tels: []scoped{
				{"istio-system", []*telemetryapi.Metrics{{Providers: prom, Overrides: []*telemetryapi.MetricsOverrides{disableAll}}}},
				{proxyNS, []*telemetryapi.Metrics{{Providers: prom}}},
			},
			client: off, server: off},
		// istiod lists every metric with nothing set: all back, unchanged.
		{name: "TestTelemetryFilters/disabled-then-reenable",
			tels: []scoped{
				{"istio-system", []*telemetryapi.Metrics{{Providers: prom, Overrides: []*telemetryapi.MetricsOverrides{disableAll}}}},
				{proxyNS, []*telemetryapi.Metrics{{Providers: prom, Overrides: []*telemetryapi.MetricsOverrides{{Match: match(telemetryapi.MetricSelector_ALL_METRICS)}}}}},
			},
			client: plain, server: plain},
		{name: "TestTelemetryFilters/disabled-then-overrides",
			tels: []scoped{
				{"istio-system", []*telemetryapi.Metrics{{Providers: prom, Overrides: []*telemetryapi.MetricsOverrides{disableAll}}}},
				{proxyNS, []*telemetryapi.Metrics{{Providers: prom, Overrides: []*telemetryapi.MetricsOverrides{requestCountTags}}}},
			},
			client: cfg, server: cfg},
		{name: "TestTelemetryFilters/default prometheus",
			tels:   []scoped{{"istio-system", []*telemetryapi.Metrics{{Providers: prom}}}},
			client: plain, server: plain},
		{name: "TestTelemetryFilters/default provider prometheus",
			client: plain, server: plain},
		{name: "TestTelemetryFilters/prometheus overrides",
			tels:   []scoped{{"istio-system", []*telemetryapi.Metrics{{Providers: prom, Overrides: []*telemetryapi.MetricsOverrides{requestCountTags}}}}},
			client: cfg, server: cfg},
		{name: "TestTelemetryFilters/prometheus overrides all metrics",
			tels:   []scoped{{"istio-system", []*telemetryapi.Metrics{{Providers: prom, Overrides: []*telemetryapi.MetricsOverrides{allTags}}}}},
			client: every(cfg.entries["requests_total"], nil), server: every(cfg.entries["requests_total"], nil)},
		{name: "TestTelemetryFilters/prometheus overrides all metrics first",
			tels:   []scoped{{"istio-system", []*telemetryapi.Metrics{{Providers: prom, Overrides: []*telemetryapi.MetricsOverrides{allTags, addOverride}}}}},
			client: every(cfg.entries["requests_total"], map[string]istioEntry{"requests_total": {remove: []string{"remove"}, dims: map[string]string{"add": "'add-override'"}}}),
			server: every(cfg.entries["requests_total"], map[string]istioEntry{"requests_total": {remove: []string{"remove"}, dims: map[string]string{"add": "'add-override'"}}})},
		{name: "TestTelemetryFilters/prometheus overrides all metrics secondary",
			tels:   []scoped{{"istio-system", []*telemetryapi.Metrics{{Providers: prom, Overrides: []*telemetryapi.MetricsOverrides{addOverride, allTags}}}}},
			client: every(cfg.entries["requests_total"], nil), server: every(cfg.entries["requests_total"], nil)},
		// The TCP filter: in LeanMesh mode TCP chains keep Istio's own
		// istio.stats, which istiod still configures from these Telemetries;
		// leanmesh's config (compared here) is the one its filters compile.
		{name: "TestTelemetryFilters/prometheus overrides TCP",
			tels:   []scoped{{"istio-system", []*telemetryapi.Metrics{{Providers: prom, Overrides: []*telemetryapi.MetricsOverrides{requestCountTags}}}}},
			client: cfg, server: cfg},
		{name: "TestTelemetryFilters/reporting-interval",
			tels:   []scoped{{"istio-system", []*telemetryapi.Metrics{{Providers: prom, ReportingInterval: durationpb.New(15e9)}}}},
			client: plain, server: plain,
			notCarried: "reportingInterval"}, // tcp_reporting_duration: 15s is not carried (docs/install.md §6)
		{name: "TestTelemetryFilters/override-interval",
			tels: []scoped{
				{"istio-system", []*telemetryapi.Metrics{{Providers: prom, ReportingInterval: durationpb.New(15e9)}}},
				{proxyNS, []*telemetryapi.Metrics{{Providers: prom, ReportingInterval: durationpb.New(10e9)}}},
			},
			client: plain, server: plain,
			notCarried: "reportingInterval"},
		{name: "TestTelemetryFilters/namespace overrides merge without provider",
			tels: []scoped{
				{"istio-system", []*telemetryapi.Metrics{{Providers: prom}}},
				{proxyNS, []*telemetryapi.Metrics{{Overrides: []*telemetryapi.MetricsOverrides{requestCountTags}}}},
			},
			client: cfg, server: cfg},
		{name: "TestTelemetryFilters/namespace overrides merge with default provider",
			tels:   []scoped{{proxyNS, []*telemetryapi.Metrics{{Overrides: []*telemetryapi.MetricsOverrides{requestCountTags}}}}},
			client: cfg, server: cfg},

		// TestMergeMetrics: one list of Metrics, here one root Telemetry.
		{name: "TestMergeMetrics/enable all metrics",
			tels:   []scoped{{"istio-system", []*telemetryapi.Metrics{{Providers: prom}}}},
			client: plain, server: plain},
		{name: "TestMergeMetrics/metrics with default providers",
			client: plain, server: plain},
		{name: "TestMergeMetrics/disable all metrics",
			tels:   []scoped{{"istio-system", []*telemetryapi.Metrics{{Providers: prom, Overrides: []*telemetryapi.MetricsOverrides{disableMode(telemetryapi.WorkloadMode_CLIENT_AND_SERVER)}}}}},
			client: off, server: off},
		{name: "TestMergeMetrics/disable all metrics without mode",
			tels:   []scoped{{"istio-system", []*telemetryapi.Metrics{{Providers: prom, Overrides: []*telemetryapi.MetricsOverrides{{Match: match(telemetryapi.MetricSelector_ALL_METRICS), Disabled: wrapperspb.Bool(true)}}}}}},
			client: off, server: off},
		// Mode-specific overrides are reported, not carried (docs/install.md
		// §6: leanmesh's overrides apply to client and server alike), so
		// istiod's one-sided outcome is not reproduced: both sides stay plain.
		{name: "TestMergeMetrics/disable server metrics",
			tels:   []scoped{{"istio-system", []*telemetryapi.Metrics{{Providers: prom, Overrides: []*telemetryapi.MetricsOverrides{disableMode(telemetryapi.WorkloadMode_SERVER)}}}}},
			client: plain, server: plain, notCarried: "mode SERVER"},
		{name: "TestMergeMetrics/disable client metrics",
			tels:   []scoped{{"istio-system", []*telemetryapi.Metrics{{Providers: prom, Overrides: []*telemetryapi.MetricsOverrides{disableMode(telemetryapi.WorkloadMode_CLIENT)}}}}},
			client: plain, server: plain, notCarried: "mode CLIENT"},
		{name: "TestMergeMetrics/disable server and custom client metrics",
			tels: []scoped{{"istio-system", []*telemetryapi.Metrics{{Providers: prom, Overrides: []*telemetryapi.MetricsOverrides{
				disableMode(telemetryapi.WorkloadMode_SERVER),
				{Match: &telemetryapi.MetricSelector{MetricMatch: &telemetryapi.MetricSelector_Metric{Metric: telemetryapi.MetricSelector_REQUEST_COUNT}, Mode: telemetryapi.WorkloadMode_CLIENT},
					TagOverrides: map[string]*telemetryapi.MetricsOverrides_TagOverride{"destination_canonical_service": {Operation: telemetryapi.MetricsOverrides_TagOverride_REMOVE}}},
			}}}}},
			client: plain, server: plain, notCarried: "mode CLIENT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tels []*telemetryv1.Telemetry
			for i, s := range tc.tels {
				tels = append(tels, tel(s.ns, "default", nil, len(tc.tels)-i, s.metrics...))
			}
			res := CarryOver(proxyNS, "istio-system", tels)
			notes := strings.Join(res.NotCarried, "\n")
			if tc.notCarried == "" && notes != "" || !strings.Contains(notes, tc.notCarried) {
				t.Errorf("not carried %q, want %q", res.NotCarried, tc.notCarried)
			}
			got := effective(t, res.Overrides)
			for dir, want := range map[pluginconfig.Direction]side{pluginconfig.Outbound: tc.client, pluginconfig.Gateway: tc.client, pluginconfig.Inbound: tc.server} {
				for m := telemetry.Metric(0); m <= telemetry.TCPReceivedBytes; m++ {
					w := istioOutcome(m, want)
					if g := got[dir][m]; !maps.Equal(g, w) || (g == nil) != (w == nil) {
						t.Errorf("%s %s: leanmesh %v, istiod @%.7s %v (carried %+v)", dir, m, g, istiodCommit, w, res.Overrides)
					}
				}
			}
		})
	}
}

func match(m telemetryapi.MetricSelector_IstioMetric) *telemetryapi.MetricSelector {
	return &telemetryapi.MetricSelector{MetricMatch: &telemetryapi.MetricSelector_Metric{Metric: m}}
}

// istioOutcome is what Envoy's istio_stats exports for m under istiod's
// config: nil when the filter is absent or m dropped, else label → dimension
// expression ("" for a standard label's own value). Removing a label that is
// not standard is ignored, as istio_stats.cc does ("Tag is not standard").
func istioOutcome(m telemetry.Metric, s side) map[string]string {
	if s.off {
		return nil
	}
	e := s.entries[m.Spec().ShortName]
	if e.drop {
		return nil
	}
	out := map[string]string{}
	for _, l := range m.Spec().Labels {
		out[l.String()] = ""
	}
	for _, tag := range e.remove {
		delete(out, tag)
	}
	maps.Copy(out, e.dims)
	return out
}

// effective renders the carried overrides as a LeanMesh policy in the
// proxy's namespace would (controller/install puts them in spec.metrics),
// parses each rendered plugin_config with the filter's own parser and
// returns, per direction, what each family is exported with.
func effective(t *testing.T, carried []v1alpha1.MetricOverride) map[pluginconfig.Direction]map[telemetry.Metric]map[string]string {
	t.Helper()
	p := &v1alpha1.TelemetryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: proxyNS}, Spec: v1alpha1.TelemetryPolicySpec{
		Mode:     v1alpha1.ModeLeanMesh,
		Contexts: []v1alpha1.TrafficContext{v1alpha1.ContextInbound, v1alpha1.ContextOutbound, v1alpha1.ContextGateway},
		Metrics:  carried,
	}}
	out, err := render.Render(render.Input{Policy: p, RootNamespace: "istio-system", Matrix: release.Embedded()})
	if err != nil {
		t.Fatalf("render %+v: %v", carried, err)
	}
	got := map[pluginconfig.Direction]map[telemetry.Metric]map[string]string{}
	for _, o := range out.Objects {
		for _, cp := range o.(*networkingv1alpha3.EnvoyFilter).Spec.ConfigPatches {
			if cp.ApplyTo != networkingapi.EnvoyFilter_HTTP_FILTER || cp.Patch.GetValue() == nil {
				continue
			}
			pc := cp.Patch.Value.GetFields()["typed_config"].GetStructValue().GetFields()["plugin_config"].GetStructValue().GetFields()["value"]
			raw, err := json.Marshal(pc.GetStructValue().AsMap())
			if err != nil {
				t.Fatal(err)
			}
			c, err := pluginconfig.FromJSON(raw)
			if err != nil {
				t.Fatalf("rendered plugin_config %s: %v", raw, err)
			}
			fams := map[telemetry.Metric]map[string]string{}
			for m := telemetry.Metric(0); m <= telemetry.TCPReceivedBytes; m++ {
				if cols := c.Overrides.Columns(m); cols != nil {
					fams[m] = map[string]string{}
					for _, col := range cols {
						fams[m][col.Name] = col.Expr
					}
				}
			}
			got[c.Direction] = fams
		}
	}
	if len(got) != 3 {
		t.Fatalf("rendered directions %v, want inbound, outbound, gateway", maps.Keys(got))
	}
	return got
}
