package install

import (
	"reflect"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"
	telemetryapi "istio.io/api/telemetry/v1alpha1"
	typeapi "istio.io/api/type/v1beta1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
)

func TestSelectorsOverlap(t *testing.T) {
	cases := []struct {
		a, b map[string]string
		want bool
	}{
		{nil, nil, true},
		{map[string]string{"app": "a"}, nil, true},
		{map[string]string{"app": "a"}, map[string]string{"app": "a", "v": "1"}, true},
		{map[string]string{"app": "a"}, map[string]string{"app": "b"}, false},
		{map[string]string{"app": "a"}, map[string]string{"tier": "web"}, true},
	}
	for _, c := range cases {
		if got := selectorsOverlap(c.a, c.b); got != c.want {
			t.Errorf("overlap(%v, %v) = %v", c.a, c.b, got)
		}
		if got := selectorsOverlap(c.b, c.a); got != c.want {
			t.Errorf("overlap(%v, %v) = %v (not symmetric)", c.b, c.a, got)
		}
	}
}

func policy(ns, name string, age time.Duration, labels map[string]string) v1alpha1.TelemetryPolicy {
	return v1alpha1.TelemetryPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "/" + name),
			CreationTimestamp: metav1.NewTime(time.Unix(1000, 0).Add(-age))},
		Spec: v1alpha1.TelemetryPolicySpec{Selector: v1alpha1.WorkloadSelector{MatchLabels: labels}},
	}
}

func TestOverlappingPolicies(t *testing.T) {
	const root = "istio-system"
	all := []v1alpha1.TelemetryPolicy{
		policy("shop", "old-reviews", time.Hour, map[string]string{"app": "reviews"}),
		policy("shop", "new-reviews", time.Minute, map[string]string{"app": "reviews", "version": "v2"}),
		policy("shop", "ratings", 2*time.Hour, map[string]string{"app": "ratings"}),
		policy("pay", "reviews", 3*time.Hour, map[string]string{"app": "reviews"}),
		policy(root, "mesh", 30*time.Minute, nil),
	}
	cases := []struct {
		p    int
		want []string
	}{
		{0, nil}, // oldest in its scope apart from others' selectors
		{1, []string{"istio-system/mesh", "shop/old-reviews"}}, // newer than both
		{2, nil}, // distinct selector, older than mesh
		{3, nil}, // other namespace, older than mesh
		{4, []string{"pay/reviews", "shop/old-reviews", "shop/ratings"}},
	}
	for _, c := range cases {
		p := all[c.p]
		if got := overlappingPolicies(&p, all, root); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s/%s: got %v, want %v", p.Namespace, p.Name, got, c.want)
		}
	}
}

func tel(ns, name string, sel map[string]string, disabled bool, managed bool) *telemetryv1.Telemetry {
	t := &telemetryv1.Telemetry{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if sel != nil {
		t.Spec.Selector = &typeapi.WorkloadSelector{MatchLabels: sel}
	}
	t.Spec.Metrics = []*telemetryapi.Metrics{{Providers: []*telemetryapi.ProviderRef{{Name: "prometheus"}}}}
	if disabled {
		t.Spec.Metrics[0].Overrides = []*telemetryapi.MetricsOverrides{{Disabled: wrapperspb.Bool(true)}}
	}
	if managed {
		t.Labels = map[string]string{"app.kubernetes.io/managed-by": "leanmesh"}
	}
	return t
}

func TestConflictingTelemetries(t *testing.T) {
	const root = "istio-system"
	pods := map[string]string{"app": "reviews", "leanmesh.io/envoy-version": "1.39.1"}
	tels := []*telemetryv1.Telemetry{
		tel("shop", "ours", pods, true, true),
		tel("shop", "user-reviews", map[string]string{"app": "reviews"}, false, false),
		tel("shop", "user-ratings", map[string]string{"app": "ratings"}, true, false),
		tel("shop", "ns-wide-off", nil, true, false),
		tel(root, "mesh-default", nil, false, false),
		tel("pay", "elsewhere", map[string]string{"app": "reviews"}, true, false),
	}
	cases := []struct {
		mode v1alpha1.Mode
		ns   string
		want []string
	}{
		{v1alpha1.ModeLeanMesh, "shop", []string{"shop/user-reviews"}},
		{v1alpha1.ModeShadow, "shop", []string{"shop/ns-wide-off"}},
		{v1alpha1.ModeLeanMesh, root, []string{"pay/elsewhere", "shop/user-reviews"}},
		{v1alpha1.ModeIstio, "shop", nil},
	}
	for _, c := range cases {
		if got := conflictingTelemetries(c.mode, c.ns, root, pods, tels); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s in %s: got %v, want %v", c.mode, c.ns, got, c.want)
		}
	}
}

func TestWorkloadName(t *testing.T) {
	cases := []struct {
		labels map[string]string
		want   string
	}{
		{map[string]string{"service.istio.io/canonical-name": "reviews", "app": "x"}, "reviews"},
		{map[string]string{"app": "ratings"}, "ratings"},
		{nil, "pod-1"},
	}
	for _, c := range cases {
		if got := workloadName("pod-1", c.labels); got != c.want {
			t.Errorf("%v: %s", c.labels, got)
		}
	}
}
