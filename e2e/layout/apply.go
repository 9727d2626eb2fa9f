package layout

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/release"
	"github.com/leanmesh/leanmesh/controller/render"
)

// SidecarPolicy is a policy in ns for the pods labelled app=<app> (sidecar
// contexts), named after the app.
func SidecarPolicy(ns, app string, mode v1alpha1.Mode) *v1alpha1.TelemetryPolicy {
	p := &v1alpha1.TelemetryPolicy{Spec: v1alpha1.TelemetryPolicySpec{Mode: mode,
		Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": app}}}}
	p.Namespace, p.Name = ns, app
	return p
}

// GatewayPolicy is a policy in ns for the gateway pods labelled
// istio=<istio> (gateway context), named after the label.
func GatewayPolicy(ns, istio string, mode v1alpha1.Mode) *v1alpha1.TelemetryPolicy {
	p := &v1alpha1.TelemetryPolicy{Spec: v1alpha1.TelemetryPolicySpec{Mode: mode,
		Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"istio": istio}},
		Contexts: []v1alpha1.TrafficContext{v1alpha1.ContextGateway}}}
	p.Namespace, p.Name = ns, istio
	return p
}

// Apply renders each policy as the controller does (root namespace
// istio-system, the embedded release matrix) and applies the objects
// server-side under the controller's field owner, so istiod serves what the
// controller would make it serve, without running the controller.
func Apply(ctx context.Context, c client.Client, policies ...*v1alpha1.TelemetryPolicy) error {
	for _, p := range policies {
		out, err := render.Render(render.Input{Policy: p, RootNamespace: "istio-system", Matrix: release.Embedded()})
		if err != nil {
			return err
		}
		for _, o := range out.Objects {
			u, err := render.Unstructured(o)
			if err != nil {
				return err
			}
			if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(v1alpha1.FieldOwner), client.ForceOwnership); err != nil {
				return err
			}
		}
	}
	return nil
}
