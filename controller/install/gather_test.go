package install

import (
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/render"
	"github.com/leanmesh/leanmesh/controller/scope"
)

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

func podMeta(ns, name string, labels map[string]string) metav1.PartialObjectMetadata {
	return metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}}
}

// TestPlacementsFor: a mesh-wide policy with one workload overridden keeps
// one namespace-wide copy where nothing is overridden and per-workload
// copies (stable labels, never matching the overridden pod) where something is.
func TestPlacementsFor(t *testing.T) {
	const envoy = "1.39.1"
	lib := func(l map[string]string) map[string]string {
		l[v1alpha1.LabelEnvoyVersion] = envoy
		return l
	}
	mesh := &v1alpha1.TelemetryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "mesh"}}
	configured := []metav1.PartialObjectMetadata{
		podMeta("a", "web-1", lib(map[string]string{"app": "web", "pod-template-hash": "x1"})),
		podMeta("a", "web-2", lib(map[string]string{"app": "web", "pod-template-hash": "x2"})),
		podMeta("b", "api-1", lib(map[string]string{"app": "api"})),
	}
	o := scope.Outcome{OverriddenPods: []scope.Pod{{Namespace: "a", Name: "legacy-1", Labels: lib(map[string]string{"app": "legacy"})}}}
	got, unplaced := placementsFor(mesh, "istio-system", envoy, configured, o)
	want := []render.Placement{
		{Namespace: "a", Selector: map[string]string{"app": "web", v1alpha1.LabelEnvoyVersion: envoy}},
		{Namespace: "b", Selector: map[string]string{v1alpha1.LabelEnvoyVersion: envoy}},
	}
	if !reflect.DeepEqual(got, want) || len(unplaced) != 0 {
		t.Fatalf("placements %+v unplaced %v, want %+v", got, unplaced, want)
	}

	// A governed workload whose stable labels also select the overridden pod
	// cannot be placed: it is reported and keeps Istio's telemetry.
	o.OverriddenPods[0].Labels = lib(map[string]string{"app": "web", "track": "canary"})
	got, unplaced = placementsFor(mesh, "istio-system", envoy, configured[:2], o)
	if len(got) != 0 || !reflect.DeepEqual(unplaced, []string{"a/web"}) {
		t.Fatalf("placements %+v unplaced %v", got, unplaced)
	}

	// Nothing overridden with the library: no placements (objects stay mesh-wide).
	o.OverriddenPods[0].Labels = map[string]string{"app": "legacy"}
	if got, _ := placementsFor(mesh, "istio-system", envoy, configured, o); got != nil {
		t.Fatalf("placements %+v", got)
	}
}
