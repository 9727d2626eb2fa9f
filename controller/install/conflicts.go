package install

import (
	"fmt"
	"sort"
	"strings"

	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/render"
)

// selectorsOverlap reports whether one pod can carry both matchLabels
// selectors: they overlap unless some key demands two different values.
// Decided on the selectors, not on today's pods, because the rendered
// EnvoyFilters would apply to tomorrow's pods too.
func selectorsOverlap(a, b map[string]string) bool {
	for k, v := range a {
		if w, ok := b[k]; ok && w != v {
			return false
		}
	}
	return true
}

// scopesOverlap: a policy reaches its namespace, or the whole mesh from
// Istio's root namespace.
func scopesOverlap(a, b, root string) bool {
	return a == b || a == root || b == root
}

// precedes orders policies for conflict resolution: the older one keeps
// the workloads, so adding a policy never takes them from a working one.
func precedes(a, b *v1alpha1.TelemetryPolicy) bool {
	ta, tb := a.CreationTimestamp.Time, b.CreationTimestamp.Time
	if !ta.Equal(tb) {
		return ta.Before(tb)
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// overlappingPolicies returns the policies that select workloads p also
// selects and take precedence over p, as "namespace/name".
func overlappingPolicies(p *v1alpha1.TelemetryPolicy, others []v1alpha1.TelemetryPolicy, root string) []string {
	var out []string
	for i := range others {
		o := &others[i]
		if o.UID == p.UID || (o.Namespace == p.Namespace && o.Name == p.Name) || o.DeletionTimestamp != nil {
			continue
		}
		if !scopesOverlap(p.Namespace, o.Namespace, root) {
			continue
		}
		if !selectorsOverlap(p.Spec.Selector.MatchLabels, o.Spec.Selector.MatchLabels) {
			continue
		}
		if precedes(o, p) {
			out = append(out, o.Namespace+"/"+o.Name)
		}
	}
	sort.Strings(out)
	return out
}

// conflictingTelemetries returns user Telemetry resources that make the
// policy ambiguous, as "namespace/name":
//   - LeanMesh: Istio applies only one workload-selector Telemetry per
//     workload, so a user one with metrics settings for the same pods would
//     either lose to ours or silently win over it.
//   - Shadow: any Telemetry in scope disabling a metric for those pods leaves
//     nothing from Istio to compare against.
//
// Namespace-wide user Telemetries are fine in LeanMesh mode: ours is more
// specific and Istio merges it over them.
func conflictingTelemetries(mode v1alpha1.Mode, policyNS, root string, podSelector map[string]string, tels []*telemetryv1.Telemetry) []string {
	var out []string
	for _, t := range tels {
		if t.Labels[render.LabelManagedBy] == render.ManagedBy || t.DeletionTimestamp != nil {
			continue
		}
		inScope := t.Namespace == policyNS || policyNS == root || t.Namespace == root
		if !inScope {
			continue
		}
		sel := t.Spec.GetSelector().GetMatchLabels()
		if len(t.Spec.GetTargetRefs()) > 0 || t.Spec.GetTargetRef() != nil {
			continue // targets Gateway API objects, not sidecars by label
		}
		switch mode {
		case v1alpha1.ModeLeanMesh:
			// A root-namespace selector Telemetry only reaches root pods.
			if t.Namespace == root && policyNS != root {
				continue
			}
			if len(sel) > 0 && selectorsOverlap(sel, podSelector) && len(t.Spec.GetMetrics()) > 0 {
				out = append(out, t.Namespace+"/"+t.Name)
			}
		case v1alpha1.ModeShadow:
			if (len(sel) == 0 || selectorsOverlap(sel, podSelector)) && disablesMetrics(t) {
				out = append(out, t.Namespace+"/"+t.Name)
			}
		}
	}
	sort.Strings(out)
	return out
}

func disablesMetrics(t *telemetryv1.Telemetry) bool {
	for _, m := range t.Spec.GetMetrics() {
		for _, o := range m.GetOverrides() {
			if o.GetDisabled().GetValue() {
				return true
			}
		}
	}
	return false
}

// workloadName groups pods for reporting: the canonical service Istio uses,
// else the pod name.
func workloadName(podName string, labels map[string]string) string {
	for _, k := range []string{"service.istio.io/canonical-name", "app.kubernetes.io/name", "app"} {
		if v := labels[k]; v != "" {
			return v
		}
	}
	return podName
}

func joinMax(items []string, max int) string {
	if len(items) <= max {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:max], ", "), len(items)-max)
}
