package validation

import (
	"reflect"
	"strings"
	"testing"
	"time"

	telemetryapi "istio.io/api/telemetry/v1alpha1"
	typeapi "istio.io/api/type/v1beta1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/release"
	"github.com/leanmesh/leanmesh/controller/scope"
)

const root = "istio-system"

func tel(ns, name string, sel map[string]string, managed bool) *telemetryv1.Telemetry {
	t := &telemetryv1.Telemetry{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if sel != nil {
		t.Spec.Selector = &typeapi.WorkloadSelector{MatchLabels: sel}
	}
	t.Spec.Metrics = []*telemetryapi.Metrics{{Providers: []*telemetryapi.ProviderRef{{Name: "prometheus"}}}}
	if managed {
		t.Labels = map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedBy}
	}
	return t
}

func input(ns, name string, spec v1alpha1.TelemetryPolicySpec, others []v1alpha1.TelemetryPolicy, tels []*telemetryv1.Telemetry) *Input {
	p := &v1alpha1.TelemetryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.Now()}, Spec: spec}
	if spec.Mode == "" {
		spec.Mode = v1alpha1.ModeLeanMesh
	}
	all := append([]v1alpha1.TelemetryPolicy{*p}, others...)
	return &Input{Policy: p, Spec: spec, RootNamespace: root, Matrix: release.Embedded(), Scope: scope.New(root, all), Telemetries: tels}
}

func TestDefaultChain(t *testing.T) {
	reviews := v1alpha1.TelemetryPolicySpec{Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "reviews"}}}
	older := v1alpha1.TelemetryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "old", CreationTimestamp: metav1.NewTime(time.Now().Add(-time.Hour))}, Spec: reviews}
	cases := []struct {
		name   string
		in     *Input
		check  string
		reason v1alpha1.ConditionReason
		msg    string
	}{
		{"valid", input("shop", "reviews", reviews, nil, nil), "", "", ""},
		{"name too long", input("shop", strings.Repeat("x", 64), reviews, nil, nil), "PolicyName", v1alpha1.ReasonInvalidConfig, "valid label value"},
		{"unknown release", input("shop", "r", v1alpha1.TelemetryPolicySpec{IstioRelease: "0.0.1"}, nil, nil), "IstioRelease", v1alpha1.ReasonInvalidConfig, "spec.istioRelease"},
		{"mode", input("shop", "r", v1alpha1.TelemetryPolicySpec{Mode: "Both"}, nil, nil), "Mode", v1alpha1.ReasonInvalidConfig, "spec.mode"},
		{"selector envoy version", input("shop", "r", v1alpha1.TelemetryPolicySpec{Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{v1alpha1.LabelEnvoyVersion: "0.0.0"}}}, nil, nil),
			"SelectorEnvoyVersion", v1alpha1.ReasonInvalidConfig, "contradicts"},
		{"same-rank older policy", input("shop", "reviews", reviews, []v1alpha1.TelemetryPolicy{older}, nil), "ScopeConflict", v1alpha1.ReasonConflict, "shop/old"},
		{"user selector Telemetry with metrics", input("shop", "reviews", reviews, nil, []*telemetryv1.Telemetry{tel("shop", "user", map[string]string{"app": "reviews"}, false)}),
			"TelemetryConflict", v1alpha1.ReasonTelemetryConflict, "shop/user"},
		{"namespace-wide and managed Telemetries are fine", input("shop", "reviews", reviews, nil, []*telemetryv1.Telemetry{tel("shop", "ns", nil, false), tel("shop", "ours", map[string]string{"app": "reviews"}, true), tel(root, "mesh", nil, false)}),
			"", "", ""},
		{"Shadow never conflicts with a Telemetry", input("shop", "reviews", v1alpha1.TelemetryPolicySpec{Mode: v1alpha1.ModeShadow, Selector: reviews.Selector}, nil, []*telemetryv1.Telemetry{tel("shop", "user", map[string]string{"app": "reviews"}, false)}),
			"", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.in.Spec.Mode == "" {
				c.in.Spec.Mode = v1alpha1.ModeLeanMesh
			}
			got := Default().Evaluate(c.in)
			if c.check == "" {
				if got != nil {
					t.Fatalf("failed: %v", got)
				}
				return
			}
			if got == nil || got.Check != c.check || got.Reason != c.reason || !strings.Contains(got.Message, c.msg) {
				t.Fatalf("got %+v, want %s/%s containing %q", got, c.check, c.reason, c.msg)
			}
		})
	}
}

func TestChainOrder(t *testing.T) {
	want := []string{"PolicyName", "IstioRelease", "Mode", "SelectorEnvoyVersion", "ScopeConflict", "TelemetryConflict"}
	if got := Default().Names(); !reflect.DeepEqual(got, want) {
		t.Fatalf("chain %v, want %v", got, want)
	}
}
