package render

import (
	"strings"
	"testing"

	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/release"
)

// TestHybridLayout: in LeanMesh mode every patch of the HTTP EnvoyFilter is
// an HTTP_FILTER patch (they reach HTTP connection managers only, never a TCP
// chain's network filters), it removes exactly Istio's HTTP exchange and
// stats, and nothing else is rendered that could switch istio.stats off (no
// Telemetry: istiod's Telemetry API is per listener class, not per protocol).
// Shadow and Istio remove nothing. The real translation is checked against
// istiod in controller/install (TestIstiodFilterLayoutPerMode).
func TestHybridLayout(t *testing.T) {
	for _, tc := range []struct {
		mode    v1alpha1.Mode
		removed string // per context, in patch order
	}{
		{v1alpha1.ModeLeanMesh, "istio.metadata_exchange,istio.stats"},
		{v1alpha1.ModeShadow, ""},
		{v1alpha1.ModeIstio, ""},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			p := &v1alpha1.TelemetryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "gw", Namespace: "shop"}, Spec: v1alpha1.TelemetryPolicySpec{
				Mode:     tc.mode,
				Contexts: []v1alpha1.TrafficContext{v1alpha1.ContextInbound, v1alpha1.ContextOutbound, v1alpha1.ContextGateway},
			}}
			out, err := Render(Input{Policy: p, RootNamespace: "istio-system", Matrix: release.Embedded()})
			if err != nil {
				t.Fatal(err)
			}
			removed := map[networkingapi.EnvoyFilter_PatchContext][]string{}
			for _, o := range out.Objects {
				ef, ok := o.(*networkingv1alpha3.EnvoyFilter)
				if !ok {
					t.Fatalf("rendered %T %s: only EnvoyFilters expected", o, o.GetName())
				}
				if !strings.HasSuffix(ef.Name, "-http") {
					continue
				}
				for _, cp := range ef.Spec.ConfigPatches {
					if cp.ApplyTo != networkingapi.EnvoyFilter_HTTP_FILTER {
						t.Errorf("%s patch applies to %s", cp.Match.Context, cp.ApplyTo)
					}
					if cp.Patch.Operation == networkingapi.EnvoyFilter_Patch_REMOVE {
						removed[cp.Match.Context] = append(removed[cp.Match.Context], cp.Match.GetListener().GetFilterChain().GetFilter().GetSubFilter().GetName())
					}
				}
			}
			if tc.mode == v1alpha1.ModeIstio {
				// Only the scrape listener, so the target stays up (docs/exposition.md).
				if len(out.Objects) != 1 || !strings.HasSuffix(out.Objects[0].GetName(), "-exposition") {
					t.Fatalf("Istio mode rendered %d objects, want only the exposition", len(out.Objects))
				}
				return
			}
			for _, pc := range []networkingapi.EnvoyFilter_PatchContext{networkingapi.EnvoyFilter_SIDECAR_INBOUND, networkingapi.EnvoyFilter_SIDECAR_OUTBOUND, networkingapi.EnvoyFilter_GATEWAY} {
				if got := strings.Join(removed[pc], ","); got != tc.removed {
					t.Errorf("%s removes %q, want %q", pc, got, tc.removed)
				}
			}
		})
	}
}
