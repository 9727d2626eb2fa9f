package install

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/telemetryapi"
)

// carryOver puts the metric overrides of the namespace-wide Telemetries in
// the policy's scope in front of its own spec.metrics (so the policy's win)
// and reports what was carried and what could not be, on the
// TelemetryCarriedOver condition. It returns the policy to render.
func (r *Reconciler) carryOver(p *v1alpha1.TelemetryPolicy, st *statusUpdate, in *inputs) *v1alpha1.TelemetryPolicy {
	set := func(status metav1.ConditionStatus, reason, msg string) {
		v1alpha1.SetCondition(&st.s.Conditions, p.Generation, v1alpha1.ConditionTelemetryCarriedOver, status, reason, msg)
	}
	if in.check.Spec.Mode == v1alpha1.ModeIstio {
		set(metav1.ConditionTrue, v1alpha1.ReasonNoTelemetry, "mode Istio: Istio's own stack applies the Telemetry resources")
		return p
	}
	res := telemetryapi.CarryOver(p.Namespace, r.RootNamespace, in.check.Telemetries)
	switch {
	case len(res.NotCarried) > 0:
		msg := fmt.Sprintf("%d Telemetry setting(s) not carried over: %s", len(res.NotCarried), strings.Join(res.NotCarried, "; "))
		if len(res.From) > 0 {
			msg = fmt.Sprintf("metric overrides carried over from %s; ", strings.Join(res.From, ", ")) + msg
		}
		set(metav1.ConditionFalse, v1alpha1.ReasonNotCarried, msg)
	case len(res.From) > 0:
		set(metav1.ConditionTrue, v1alpha1.ReasonCarriedOver, fmt.Sprintf("%d metric override(s) carried over from %s", len(res.Overrides), strings.Join(res.From, ", ")))
	default:
		set(metav1.ConditionTrue, v1alpha1.ReasonNoTelemetry, "no namespace-wide Telemetry in scope customises Prometheus metrics")
	}
	if len(res.Overrides) == 0 {
		return p
	}
	out := p.DeepCopy()
	out.Spec.Metrics = append(res.Overrides, p.Spec.Metrics...)
	return out
}
