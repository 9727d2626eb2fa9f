package dataplane

import (
	"slices"
	"testing"
	"time"

	"github.com/leanmesh/leanmesh/filters/pluginconfig"

	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/release"
	"github.com/leanmesh/leanmesh/controller/render"
	"github.com/leanmesh/leanmesh/e2e/envoyhost"
)

var ingress = pod{"istio-ingressgateway-5d8f7c9b6-q2x7z", "istio-system", "istio-ingressgateway", "istio-ingressgateway", "", "10.1.0.5", "istio-ingressgateway-service-account"}

// TestGatewayIstioBuildThroughHost: the configs the controller renders for
// a gateway, run by the real .so through the C host. In LeanMesh mode the
// scrape listener's chain is Istio's istio.stats (every metric dropped)
// before the connection manager, and the .so's own scrape serves the
// gateway's requests but no istio_build: Istio's filter is then the only
// reporter of the gauge (TestIstioBuildReporterOnIstiod checks istiod serves
// it). In Shadow mode there is no carrier (Istio's HTTP istio.stats stays)
// and the .so serves only the prefixed copy, with the proxy's version.
func TestGatewayIstioBuildThroughHost(t *testing.T) {
	for _, tc := range []struct {
		mode        v1alpha1.Mode
		carrier     bool
		requests    string // the family the gateway's request lands in
		shadowBuild bool
	}{
		{v1alpha1.ModeLeanMesh, true, "istio_requests_total", false},
		{v1alpha1.ModeShadow, false, "leanmesh_shadow_istio_requests_total", true},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			p := &v1alpha1.TelemetryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "ingress", Namespace: "istio-system"}, Spec: v1alpha1.TelemetryPolicySpec{
				Mode: tc.mode, Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"istio": "ingressgateway"}},
				Contexts: []v1alpha1.TrafficContext{v1alpha1.ContextGateway},
			}}
			out, err := render.Render(render.Input{Policy: p, RootNamespace: "istio-system", Matrix: release.Embedded()})
			if err != nil {
				t.Fatal(err)
			}
			var gateway, exposition []byte
			var scrapeChain []string
			for _, o := range out.Objects {
				ef := o.(*networkingv1alpha3.EnvoyFilter)
				for _, cp := range ef.Spec.ConfigPatches {
					if cp.Match.Context.String() != "GATEWAY" {
						t.Fatalf("%s: patch for %s", ef.Name, cp.Match.Context)
					}
					v := cp.Patch.Value.AsMap()
					if fcs, ok := v["filter_chains"].([]any); ok {
						for _, f := range fcs[0].(map[string]any)["filters"].([]any) {
							fm := f.(map[string]any)
							scrapeChain = append(scrapeChain, fm["name"].(string))
							if fm["name"] == "envoy.filters.network.http_connection_manager" {
								exposition = pluginValue(t, fm["typed_config"].(map[string]any)["http_filters"].([]any)[0].(map[string]any))
							}
						}
						continue
					}
					if v["name"] == pluginconfig.PluginHTTP {
						gateway = pluginValue(t, v)
					}
				}
			}
			wantChain := []string{"envoy.filters.network.http_connection_manager"}
			if tc.carrier {
				wantChain = append([]string{"istio.stats"}, wantChain...)
			}
			if !slices.Equal(scrapeChain, wantChain) {
				t.Fatalf("scrape listener chain %v, want %v", scrapeChain, wantChain)
			}
			if gateway == nil || exposition == nil {
				t.Fatalf("rendered configs incomplete: gateway %s, exposition %s", gateway, exposition)
			}

			s := startSidecar(t, ingress, 1, nil)
			gw := loadConfig(t, s, gateway)
			s.ex = loadConfig(t, s, exposition)
			cluster, meta := meshCluster("reviews", "bookinfo", "9080")
			res, err := s.h.Run(&envoyhost.Request{Config: gw,
				Headers: envoyhost.H(":method", "GET", ":path", "/reviews/0", ":authority", "bookinfo.example.com", ":scheme", "https"),
				Info:    envoyhost.StreamInfo{Protocol: "HTTP/1.1", UpstreamCluster: cluster, RequestDuration: 4 * time.Millisecond},
				Cluster: meta,
				Props: []envoyhost.Prop{{Path: "upstream.uri_san_peer_certificate", Value: []byte(reviews.spiffe())},
					{Path: "upstream.uri_san_local_certificate", Value: []byte("spiffe://cluster.local/ns/istio-system/sa/" + ingress.sa)}},
				ResponseHeaders: append(envoyhost.H(":status", "200"), reviewsMX(t)...),
			})
			if err != nil || res.Error != "" {
				t.Fatalf("request: %v %s", err, res.Error)
			}
			fams := s.scrape(t)
			got := series(fams, tc.requests, map[string]string{"reporter": "source", "source_workload": ingress.workload, "destination_workload": "reviews-v2"})
			if len(got) != 1 || got[0].GetCounter().GetValue() != 1 {
				t.Fatalf("%s: gateway request series %v", tc.requests, got)
			}
			if b, ok := fams["istio_build"]; ok {
				t.Errorf("the .so serves istio_build beside Istio's: %v", b)
			}
			b := series(fams, "leanmesh_shadow_istio_build", nil)
			if !tc.shadowBuild {
				if len(b) != 0 {
					t.Errorf("leanmesh_shadow_istio_build outside Shadow: %v", b)
				}
				return
			}
			if len(b) != 1 || labelsOf(b[0])["tag"] != "1.31.1" || labelsOf(b[0])["component"] != "proxy" || b[0].GetGauge().GetValue() != 1 {
				t.Errorf("leanmesh_shadow_istio_build = %v, want one {component=proxy,tag=1.31.1} 1", b)
			}
		})
	}
}
