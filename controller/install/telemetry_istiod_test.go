package install

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/leanmesh/leanmesh/e2e/layout"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	telemetryapi "istio.io/api/telemetry/v1alpha1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/e2e/cluster"
)

// TestTelemetryCarriedOverOnIstiod: a mesh-default Telemetry in the root
// namespace disables istio_request_bytes and overrides tags of
// istio_requests_total; a LeanMesh policy carries both into leanmesh's
// config, and the sidecar receives that config from the real istiod. A tag
// value outside what the filter evaluates (a CEL conditional) is reported
// on the policy, not dropped silently. The series the config produces are
// checked through the C host in e2e/dataplane's
// TestTelemetryCarriedOverThroughHost.
func TestTelemetryCarriedOverOnIstiod(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env, istiod := cluster.StartIstiodT(t, ctx, withCRDs, "shop")
	h := runController(t, env)
	tel := &telemetryv1.Telemetry{ObjectMeta: metav1.ObjectMeta{Namespace: rootNS, Name: "mesh-default"}}
	tel.Spec.Metrics = []*telemetryapi.Metrics{{
		Providers: []*telemetryapi.ProviderRef{{Name: "prometheus"}},
		Overrides: []*telemetryapi.MetricsOverrides{
			{Match: &telemetryapi.MetricSelector{MetricMatch: &telemetryapi.MetricSelector_Metric{Metric: telemetryapi.MetricSelector_REQUEST_SIZE}}, Disabled: wrapperspb.Bool(true)},
			{Match: &telemetryapi.MetricSelector{MetricMatch: &telemetryapi.MetricSelector_Metric{Metric: telemetryapi.MetricSelector_REQUEST_COUNT}},
				TagOverrides: map[string]*telemetryapi.MetricsOverrides_TagOverride{
					"response_flags": {Operation: telemetryapi.MetricsOverrides_TagOverride_REMOVE},
					"tenant":         {Value: `request.headers["x-tenant"]`},
					"tier":           {Value: `has(request.host) ? request.host : "unknown"`},
				}},
		},
	}}
	if err := h.c.Create(ctx, tel); err != nil {
		t.Fatal(err)
	}
	sc := istiod.ConnectT(t, ctx, cluster.SidecarFor(libraryWorkload(t, ctx, env, cluster.Workload{Namespace: "shop", Name: "reviews", IP: "10.244.4.10"})))

	h.policy("shop", "reviews", v1alpha1.TelemetryPolicySpec{Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "reviews"}}})
	p := h.ready("shop", "reviews", metav1.ConditionTrue, v1alpha1.ReasonApplied)
	c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionTelemetryCarriedOver)
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonNotCarried ||
		!strings.Contains(c.Message, "istio-system/mesh-default") || !strings.Contains(c.Message, "tagOverrides[tier]") || !strings.Contains(c.Message, "is not carried") {
		t.Fatalf("TelemetryCarriedOver: %+v", c)
	}
	t.Logf("TelemetryCarriedOver=False: %s", c.Message)

	want := []any{
		// Istio's merged outcome, in Telemetry's metric order.
		map[string]any{"name": "requests_total", "tags_to_remove": []any{"response_flags"}, "dimensions": map[string]any{"tenant": "request.headers['x-tenant']"}},
		map[string]any{"name": "request_bytes", "drop": true},
	}
	var last any
	if _, err := sc.WaitFor(ctx, func(s cluster.Snapshot) bool {
		m, err := servedMetrics(s)
		if err != nil {
			last = err
			return false
		}
		last = m
		return equality.Semantic.DeepEqual(m, want)
	}); err != nil {
		t.Fatalf("sidecar's leanmesh config: %v (last metrics %v)", err, last)
	}
	t.Logf("inbound leanmesh plugin_config.metrics served by istiod: %v", last)

	t.Run("removing the Telemetry removes its overrides", func(t *testing.T) {
		if err := h.c.Delete(ctx, tel); err != nil {
			t.Fatal(err)
		}
		h.eventually("TelemetryCarriedOver=True/NoTelemetry", func() error {
			var p v1alpha1.TelemetryPolicy
			if err := h.c.Get(ctx, keyOf("shop", "reviews"), &p); err != nil {
				return err
			}
			if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionTelemetryCarriedOver); c == nil || c.Reason != v1alpha1.ReasonNoTelemetry {
				return fmt.Errorf("%+v", c)
			}
			return nil
		})
		if _, err := sc.WaitFor(ctx, func(s cluster.Snapshot) bool {
			m, err := servedMetrics(s)
			return err == nil && m == nil
		}); err != nil {
			t.Fatal(err)
		}
	})
}

// servedMetrics is plugin_config.metrics of the leanmesh filter istiod
// served on the inbound 8080 chain (an xds.type.v3.TypedStruct in the
// golang filter's plugin_config).
func servedMetrics(s cluster.Snapshot) (any, error) {
	a, err := layout.PluginConfig(s.HTTPFilterChains("virtualInbound"), "0.0.0.0_8080")
	if err != nil {
		return nil, err
	}
	var ts xdstypev3.TypedStruct
	if err := proto.Unmarshal(a.Value, &ts); err != nil {
		return nil, err
	}
	return ts.GetValue().AsMap()["metrics"], nil
}
