package install

import (
	"testing"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/release"
	"github.com/leanmesh/leanmesh/controller/render"
)

func TestDefaultRevision(t *testing.T) {
	for _, c := range []struct{ flag, spec, want string }{
		{"", "", ""},
		{"canary", "", "canary"},
		{"canary", "stable", "stable"},
	} {
		r := &Reconciler{IstioRevision: c.flag}
		p := &v1alpha1.TelemetryPolicy{Spec: v1alpha1.TelemetryPolicySpec{IstioRevision: c.spec, Mode: v1alpha1.ModeLeanMesh}}
		p.Namespace, p.Name = "shop", "p"
		out, err := render.Render(render.Input{Policy: r.withDefaultRevision(p), RootNamespace: "istio-system", Matrix: release.Embedded()})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Objects) == 0 {
			t.Fatal("no objects rendered")
		}
		for _, o := range out.Objects {
			if got := o.GetLabels()[v1alpha1.LabelRevision]; got != c.want {
				t.Errorf("flag %q spec %q: %s %s has istio.io/rev=%q, want %q", c.flag, c.spec, o.GetNamespace(), o.GetName(), got, c.want)
			}
		}
		if p.Spec.IstioRevision != c.spec {
			t.Errorf("the stored policy was changed: %q", p.Spec.IstioRevision)
		}
	}
}
