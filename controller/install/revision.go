package install

import "github.com/leanmesh/leanmesh/controller/api/v1alpha1"

// withDefaultRevision is the policy as rendered: with the controller's
// --istio-revision when the policy names none. The stored object is a copy
// so the default never reaches the API server.
func (r *Reconciler) withDefaultRevision(p *v1alpha1.TelemetryPolicy) *v1alpha1.TelemetryPolicy {
	if r.IstioRevision == "" || p.Spec.IstioRevision != "" {
		return p
	}
	out := p.DeepCopy()
	out.Spec.IstioRevision = r.IstioRevision
	return out
}
