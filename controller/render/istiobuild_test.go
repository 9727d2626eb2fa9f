package render

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/wellknown"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	statsapi "istio.io/api/envoy/extensions/stats"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/release"
)

// TestIstioBuildCarrier: Istio's istio.stats rides on the scrape listener
// exactly where LeanMesh mode may have removed a proxy's last istio.stats —
// a gateway — and nowhere else: sidecars keep it on their TCP chains, Shadow
// and Istio modes keep Istio's HTTP stats. It records nothing but istio_build
// (every standard metric dropped, no report timer), and its config parses as
// Istio's stats.PluginConfig. istiod's translation is checked in
// e2e/dataplane TestIstioBuildReporterOnIstiod.
func TestIstioBuildCarrier(t *testing.T) {
	all := []v1alpha1.TrafficContext{v1alpha1.ContextInbound, v1alpha1.ContextOutbound, v1alpha1.ContextGateway}
	for _, tc := range []struct {
		mode     v1alpha1.Mode
		contexts []v1alpha1.TrafficContext
		want     map[networkingapi.EnvoyFilter_PatchContext]bool // patch context → carrier
	}{
		{v1alpha1.ModeLeanMesh, all, map[networkingapi.EnvoyFilter_PatchContext]bool{networkingapi.EnvoyFilter_SIDECAR_OUTBOUND: false, networkingapi.EnvoyFilter_GATEWAY: true}},
		{v1alpha1.ModeLeanMesh, []v1alpha1.TrafficContext{v1alpha1.ContextGateway}, map[networkingapi.EnvoyFilter_PatchContext]bool{networkingapi.EnvoyFilter_GATEWAY: true}},
		{v1alpha1.ModeLeanMesh, nil, map[networkingapi.EnvoyFilter_PatchContext]bool{networkingapi.EnvoyFilter_SIDECAR_OUTBOUND: false}},
		{v1alpha1.ModeShadow, all, map[networkingapi.EnvoyFilter_PatchContext]bool{networkingapi.EnvoyFilter_SIDECAR_OUTBOUND: false, networkingapi.EnvoyFilter_GATEWAY: false}},
		{v1alpha1.ModeIstio, all, map[networkingapi.EnvoyFilter_PatchContext]bool{networkingapi.EnvoyFilter_SIDECAR_OUTBOUND: false, networkingapi.EnvoyFilter_GATEWAY: false}},
	} {
		p := &v1alpha1.TelemetryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop"},
			Spec: v1alpha1.TelemetryPolicySpec{Mode: tc.mode, Contexts: tc.contexts}}
		out, err := Render(Input{Policy: p, RootNamespace: "istio-system", Matrix: release.Embedded()})
		if err != nil {
			t.Fatal(err)
		}
		got := map[networkingapi.EnvoyFilter_PatchContext]bool{}
		for _, o := range out.Objects {
			ef := o.(*networkingv1alpha3.EnvoyFilter)
			for _, cp := range ef.Spec.ConfigPatches {
				if cp.ApplyTo != networkingapi.EnvoyFilter_LISTENER {
					continue
				}
				chains := cp.Patch.Value.GetFields()["filter_chains"].GetListValue().GetValues()
				if len(chains) != 1 {
					t.Fatalf("%s %v: %d filter chains", tc.mode, tc.contexts, len(chains))
				}
				var names []string
				filters := chains[0].GetStructValue().GetFields()["filters"].GetListValue().GetValues()
				for _, f := range filters {
					names = append(names, f.GetStructValue().GetFields()["name"].GetStringValue())
				}
				switch {
				case slices.Equal(names, []string{wellknown.HTTPConnectionManager}):
					got[cp.Match.Context] = false
				case slices.Equal(names, []string{IstioStatsFilter, wellknown.HTTPConnectionManager}):
					got[cp.Match.Context] = true
					checkCarrierConfig(t, filters[0].GetStructValue().GetFields()["typed_config"].GetStructValue().AsMap())
				default:
					t.Errorf("%s %v %s: scrape listener filters %v", tc.mode, tc.contexts, cp.Match.Context, names)
				}
			}
		}
		if !maps.Equal(got, tc.want) {
			t.Errorf("%s %v: carrier per context %v, want %v", tc.mode, tc.contexts, got, tc.want)
		}
	}
}

// checkCarrierConfig parses the typed config as istiod will (protobuf JSON
// into an Any of the registered stats.PluginConfig).
func checkCarrierConfig(t *testing.T, typed map[string]any) {
	t.Helper()
	raw, err := json.Marshal(typed)
	if err != nil {
		t.Fatal(err)
	}
	a := &anypb.Any{}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(raw, a); err != nil {
		t.Fatalf("carrier config is not a stats.PluginConfig Any: %v\n%s", err, raw)
	}
	cfg := &statsapi.PluginConfig{}
	if err := a.UnmarshalTo(cfg); err != nil {
		t.Fatal(err)
	}
	// istio_stats.cc Context::all_metrics_, the names a drop must use.
	for _, m := range []string{"requests_total", "request_duration_milliseconds", "request_bytes", "response_bytes",
		"request_messages_total", "response_messages_total", "tcp_connections_opened_total",
		"tcp_connections_closed_total", "tcp_sent_bytes_total", "tcp_received_bytes_total"} {
		if !slices.ContainsFunc(cfg.GetMetrics(), func(c *statsapi.MetricConfig) bool {
			return c.GetName() == m && c.GetDrop() && len(c.GetDimensions())+len(c.GetTagsToRemove()) == 0
		}) {
			t.Errorf("carrier does not drop %s: %v", m, cfg)
		}
	}
	if d := cfg.GetTcpReportingDuration(); d == nil || d.AsDuration() != 0 {
		t.Errorf("carrier tcp_reporting_duration = %v, want 0s (no report timer)", d)
	}
	if len(cfg.GetDefinitions()) != 0 {
		t.Errorf("carrier defines custom metrics: %v", cfg.GetDefinitions())
	}
}
