package telemetryapi

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/wrapperspb"
	telemetryapi "istio.io/api/telemetry/v1alpha1"
	typeapi "istio.io/api/type/v1beta1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
)

func TestExpression(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: `'fixed'`, want: `'fixed'`},
		{in: `"fixed"`, want: `'fixed'`},
		{in: `request.host`, want: `request.host`},
		{in: `string(destination.port)`, want: `string(destination.port)`},
		{in: `request.headers["X-Tenant"]`, want: `request.headers['X-Tenant']`},
		{in: ` request.headers['x-tenant'] `, want: `request.headers['x-tenant']`},
		{in: `has(request.host) ? request.host : 'unknown'`, err: "'_?_:_'"},
		{in: `request.host + '-x'`, err: "'+'"},
		{in: `has(request.host)`, err: "test selections"},
		{in: `request.headers[request.host]`, err: "request.headers['name']"},
		{in: `42`, err: "only string literals"},
		{in: `request.host ==`, err: "not valid CEL"},
		{in: `size(request.path)`, err: "size()"},
		{in: `foo.bar`, err: "unsupported expression"}, // valid CEL, not an attribute root the filter reads
	} {
		got, err := Expression(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Expression(%q) = %q, %v; want error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Expression(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func tel(ns, name string, sel map[string]string, age int, metrics ...*telemetryapi.Metrics) *telemetryv1.Telemetry {
	t := &telemetryv1.Telemetry{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.Unix(int64(1000-age), 0)}}
	t.Spec.Metrics = metrics
	if sel != nil {
		t.Spec.Selector = &typeapi.WorkloadSelector{MatchLabels: sel}
	}
	return t
}

func TestCarryOver(t *testing.T) {
	root := tel("istio-system", "mesh-default", nil, 10, &telemetryapi.Metrics{
		Providers: []*telemetryapi.ProviderRef{{Name: "prometheus"}},
		Overrides: []*telemetryapi.MetricsOverrides{
			{Match: &telemetryapi.MetricSelector{MetricMatch: &telemetryapi.MetricSelector_Metric{Metric: telemetryapi.MetricSelector_REQUEST_SIZE}}, Disabled: wrapperspb.Bool(true)},
			{Match: &telemetryapi.MetricSelector{MetricMatch: &telemetryapi.MetricSelector_Metric{Metric: telemetryapi.MetricSelector_REQUEST_COUNT}},
				TagOverrides: map[string]*telemetryapi.MetricsOverrides_TagOverride{
					"response_flags": {Operation: telemetryapi.MetricsOverrides_TagOverride_REMOVE},
					"tenant":         {Value: "request.headers['x-tenant']"},
					"tier":           {Value: "has(request.host) ? 'a' : 'b'"},
				}},
			{Match: &telemetryapi.MetricSelector{Mode: telemetryapi.WorkloadMode_CLIENT}, Disabled: wrapperspb.Bool(true)},
		},
	})
	newerRoot := tel("istio-system", "later", nil, 1, &telemetryapi.Metrics{Overrides: []*telemetryapi.MetricsOverrides{{Disabled: wrapperspb.Bool(true)}}})
	nsTel := tel("shop", "shop-default", nil, 5, &telemetryapi.Metrics{Overrides: []*telemetryapi.MetricsOverrides{{TagOverrides: map[string]*telemetryapi.MetricsOverrides_TagOverride{"request_protocol": {Operation: telemetryapi.MetricsOverrides_TagOverride_REMOVE}}}}})
	selTel := tel("shop", "reviews", map[string]string{"app": "reviews"}, 5, &telemetryapi.Metrics{Overrides: []*telemetryapi.MetricsOverrides{{Disabled: wrapperspb.Bool(true)}}})
	otherProvider := tel("pay", "otel", nil, 5, &telemetryapi.Metrics{Providers: []*telemetryapi.ProviderRef{{Name: "otel"}}, Overrides: []*telemetryapi.MetricsOverrides{{Disabled: wrapperspb.Bool(true)}}})
	all := []*telemetryv1.Telemetry{newerRoot, selTel, nsTel, root, otherProvider}

	got := CarryOver("shop", "istio-system", all)
	// Merged as istiod merges: the namespace's ALL_METRICS removal reaches
	// every metric the root customised, not the one it dropped.
	rp := []string{"request_protocol"}
	want := []v1alpha1.MetricOverride{
		{Name: "requests_total", TagsToRemove: []string{"request_protocol", "response_flags"}, Dimensions: map[string]string{"tenant": "request.headers['x-tenant']"}},
		{Name: "request_duration_milliseconds", TagsToRemove: rp},
		{Name: "request_bytes", Drop: true},
		{Name: "response_bytes", TagsToRemove: rp},
		{Name: "tcp_connections_opened_total", TagsToRemove: rp},
		{Name: "tcp_connections_closed_total", TagsToRemove: rp},
		{Name: "tcp_sent_bytes_total", TagsToRemove: rp},
		{Name: "tcp_received_bytes_total", TagsToRemove: rp},
		{Name: "request_messages_total", TagsToRemove: rp},
		{Name: "response_messages_total", TagsToRemove: rp},
	}
	if !equality.Semantic.DeepEqual(got.Overrides, want) {
		t.Errorf("overrides %+v\nwant %+v", got.Overrides, want)
	}
	if strings.Join(got.From, ",") != "istio-system/mesh-default,shop/shop-default" {
		t.Errorf("from %v", got.From)
	}
	notes := strings.Join(got.NotCarried, "\n")
	for _, w := range []string{"tagOverrides[tier]", "mode CLIENT"} {
		if !strings.Contains(notes, w) {
			t.Errorf("not carried %q missing from:\n%s", w, notes)
		}
	}
	if len(got.NotCarried) != 2 {
		t.Errorf("not carried: %q", got.NotCarried)
	}

	// A mesh-wide policy cannot carry a namespace's Telemetry: reported.
	mesh := CarryOver("istio-system", "istio-system", all)
	if len(mesh.Overrides) != 2 || !strings.Contains(strings.Join(mesh.NotCarried, "\n"), "write a policy in shop") {
		t.Errorf("mesh-wide: %+v", mesh)
	}
	// pay's Telemetry names only otel: Istio then configures no Prometheus
	// stats for pay's pods, so a mesh-wide policy must report it too.
	if !strings.Contains(strings.Join(mesh.NotCarried, "\n"), "write a policy in pay") {
		t.Errorf("a Telemetry moving metrics to another provider is not reported: %q", mesh.NotCarried)
	}
	pay := CarryOver("pay", "istio-system", all)
	if !equality.Semantic.DeepEqual(pay.Overrides, []v1alpha1.MetricOverride{{Drop: true}}) || strings.Join(pay.From, ",") != "pay/otel" {
		t.Errorf("pay: Prometheus out of scope carries as everything dropped: %+v", pay)
	}
}
