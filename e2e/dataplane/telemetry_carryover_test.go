package dataplane

import (
	"testing"
	"time"

	"github.com/leanmesh/leanmesh/filters/pluginconfig"

	"google.golang.org/protobuf/types/known/wrapperspb"
	telemetryapi "istio.io/api/telemetry/v1alpha1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/release"
	"github.com/leanmesh/leanmesh/controller/render"
	carry "github.com/leanmesh/leanmesh/controller/telemetryapi"
)

// TestTelemetryCarriedOverThroughHost: a mesh-default Telemetry that
// disables istio_request_bytes and, on istio_requests_total, removes
// response_flags and upserts tenant from a request header, is carried into
// a LeanMesh policy's config by the controller's code (CarryOver + Render),
// and the library loaded by the C host emits series shaped by it.
// TestTelemetryCarriedOverOnIstiod checks the same config reaches a sidecar
// through the real istiod.
func TestTelemetryCarriedOverThroughHost(t *testing.T) {
	tel := &telemetryv1.Telemetry{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "mesh-default"}}
	tel.Spec.Metrics = []*telemetryapi.Metrics{{
		Providers: []*telemetryapi.ProviderRef{{Name: "prometheus"}},
		Overrides: []*telemetryapi.MetricsOverrides{
			{Match: &telemetryapi.MetricSelector{MetricMatch: &telemetryapi.MetricSelector_Metric{Metric: telemetryapi.MetricSelector_REQUEST_SIZE}}, Disabled: wrapperspb.Bool(true)},
			{Match: &telemetryapi.MetricSelector{MetricMatch: &telemetryapi.MetricSelector_Metric{Metric: telemetryapi.MetricSelector_REQUEST_COUNT}},
				TagOverrides: map[string]*telemetryapi.MetricsOverrides_TagOverride{
					"response_flags": {Operation: telemetryapi.MetricsOverrides_TagOverride_REMOVE},
					"tenant":         {Value: `request.headers["x-tenant"]`},
				}},
		},
	}}
	res := carry.CarryOver("bookinfo", "istio-system", []*telemetryv1.Telemetry{tel})
	if len(res.NotCarried) > 0 {
		t.Fatalf("not carried: %v", res.NotCarried)
	}
	p := &v1alpha1.TelemetryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: "reviews"}}
	p.Spec.Selector.MatchLabels = map[string]string{"app": "reviews"}
	p.Spec.Metrics = res.Overrides
	out, err := render.Render(render.Input{Policy: p, RootNamespace: "istio-system", Matrix: release.Embedded()})
	if err != nil {
		t.Fatal(err)
	}
	metrics := renderedMetrics(t, out.Objects)
	t.Logf("rendered plugin_config metrics: %v", metrics)

	s := startSidecar(t, reviews, 1, map[string]interface{}{"metrics": metrics})
	id, v := mxPeer(t, "client")
	s.inboundFrom(t, id, v, time.Millisecond, "x-tenant", "acme")
	fams := s.scrape(t)
	reqs := series(fams, "istio_requests_total", map[string]string{"reporter": "destination", "source_workload": "client"})
	if len(reqs) != 1 {
		t.Fatalf("istio_requests_total: %d series", len(reqs))
	}
	l := labelsOf(reqs[0])
	if l["tenant"] != "acme" {
		t.Errorf("tenant = %q, want acme (labels %v)", l["tenant"], l)
	}
	if _, ok := l["response_flags"]; ok {
		t.Errorf("response_flags still present: %v", l)
	}
	if _, ok := fams["istio_request_bytes"]; ok {
		t.Error("istio_request_bytes emitted although the Telemetry disables it")
	}
	if _, ok := fams["istio_response_bytes"]; !ok {
		t.Error("istio_response_bytes missing: only REQUEST_SIZE was disabled")
	}
	if d := series(fams, "istio_request_duration_milliseconds", map[string]string{"reporter": "destination"}); len(d) > 0 {
		if _, ok := labelsOf(d[0])["response_flags"]; !ok {
			t.Error("response_flags removed from istio_request_duration_milliseconds too; the override matched REQUEST_COUNT only")
		}
	}
}

// renderedMetrics digs the inbound leanmesh filter's plugin_config.metrics
// out of the rendered EnvoyFilters, as istiod would hand it to the proxy.
func renderedMetrics(t *testing.T, objs []client.Object) interface{} {
	t.Helper()
	for _, o := range objs {
		ef, ok := o.(*networkingv1alpha3.EnvoyFilter)
		if !ok {
			continue
		}
		for _, cp := range ef.Spec.ConfigPatches {
			v := cp.GetPatch().GetValue().AsMap()
			if v["name"] != pluginconfig.PluginHTTP {
				continue
			}
			tc, _ := v["typed_config"].(map[string]interface{})
			pc, _ := tc["plugin_config"].(map[string]interface{})
			val, _ := pc["value"].(map[string]interface{})
			if m, ok := val["metrics"]; ok {
				return m
			}
		}
	}
	t.Fatal("no rendered leanmesh filter with plugin_config.metrics")
	return nil
}
