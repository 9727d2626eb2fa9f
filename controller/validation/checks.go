package validation

import (
	"fmt"
	"sort"
	"strings"

	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/scope"
)

func invalid(format string, args ...any) (v1alpha1.ConditionReason, string) {
	return v1alpha1.ReasonInvalidConfig, fmt.Sprintf(format, args...)
}

// policyName: the name becomes a label value on every rendered object.
func policyName(in *Input) (v1alpha1.ConditionReason, string) {
	if errs := validation.IsValidLabelValue(in.Policy.Name); len(errs) > 0 {
		return invalid("policy name %q must be a valid label value (at most 63 characters): %s", in.Policy.Name, strings.Join(errs, "; "))
	}
	return "", ""
}

// istioRelease: the release must be a row of the version matrix.
func istioRelease(in *Input) (v1alpha1.ConditionReason, string) {
	if _, err := in.Matrix.Find(in.Spec.IstioRelease); err != nil {
		return invalid("spec.istioRelease: %v", err)
	}
	return "", ""
}

func mode(in *Input) (v1alpha1.ConditionReason, string) {
	switch in.Spec.Mode {
	case v1alpha1.ModeIstio, v1alpha1.ModeLeanMesh, v1alpha1.ModeShadow:
		return "", ""
	}
	return invalid("spec.mode: %q is not Istio, LeanMesh or Shadow", in.Spec.Mode)
}

// selectorEnvoyVersion: a selector naming another Envoy than the release's
// would select no pod the filters may load into.
func selectorEnvoyVersion(in *Input) (v1alpha1.ConditionReason, string) {
	rel, err := in.Matrix.Find(in.Spec.IstioRelease)
	if err != nil {
		return "", ""
	}
	if v, ok := in.Spec.Selector.MatchLabels[v1alpha1.LabelEnvoyVersion]; ok && v != rel.Envoy {
		return invalid("spec.selector: %s=%s contradicts Istio %s (Envoy %s)", v1alpha1.LabelEnvoyVersion, v, rel.Istio, rel.Envoy)
	}
	return "", ""
}

// scopeConflict: an older policy of the same scope rank selects the same
// workloads (scope package); Istio would find the pair ambiguous too.
func scopeConflict(in *Input) (v1alpha1.ConditionReason, string) {
	if in.Scope == nil {
		return "", ""
	}
	older := in.Scope.Conflicts(scope.Key{Namespace: in.Policy.Namespace, Name: in.Policy.Name})
	if len(older) == 0 {
		return "", ""
	}
	names := make([]string, len(older))
	for i, k := range older {
		names[i] = k.String()
	}
	sort.Strings(names)
	return v1alpha1.ReasonConflict, fmt.Sprintf("selects workloads already selected by older polic%s %s of the same scope (%s); "+
		"make one more specific (a narrower policy overrides a wider one), narrow the selectors, or delete one",
		plural(len(names), "y", "ies"), JoinMax(names, 5), in.Scope.RankOf(in.Policy))
}

// telemetryConflict: LeanMesh mode and a user Telemetry with a workload
// selector configuring metrics for the same pods. Istio applies one
// selector Telemetry per workload, so the user's would lose to ours or
// silently win over it.
//
// Shadow mode never conflicts: Istio's own stack keeps running with the
// user's customisations, and leanmesh observes beside it.
func telemetryConflict(in *Input) (v1alpha1.ConditionReason, string) {
	if in.Spec.Mode != v1alpha1.ModeLeanMesh {
		return "", ""
	}
	var clash []string
	for _, t := range in.Telemetries {
		if t.Labels[v1alpha1.LabelManagedBy] == v1alpha1.ManagedBy || !t.DeletionTimestamp.IsZero() {
			continue
		}
		if len(t.Spec.GetTargetRefs()) > 0 || t.Spec.GetTargetRef() != nil {
			continue // targets Gateway API objects, not sidecars by label
		}
		sel := t.Spec.GetSelector().GetMatchLabels()
		if len(sel) == 0 || len(t.Spec.GetMetrics()) == 0 {
			continue // namespace-wide: ours is more specific and Istio merges it over them
		}
		// A selector Telemetry only reaches pods of its own namespace.
		if t.Namespace != in.Policy.Namespace && in.Policy.Namespace != in.RootNamespace {
			continue
		}
		if selectorsOverlap(sel, in.Spec.Selector.MatchLabels) {
			clash = append(clash, t.Namespace+"/"+t.Name)
		}
	}
	if len(clash) == 0 {
		return "", ""
	}
	sort.Strings(clash)
	return v1alpha1.ReasonTelemetryConflict, fmt.Sprintf("Telemetry %s also configures metrics for the selected workloads (%s mode); remove its metrics settings or narrow its selector",
		JoinMax(clash, 5), in.Spec.Mode)
}

func selectorsOverlap(a, b map[string]string) bool {
	for k, v := range a {
		if w, ok := b[k]; ok && w != v {
			return false
		}
	}
	return true
}

// InReach returns the Telemetry resources in reach of a policy in ns.
func InReach(ns, root string, tels []*telemetryv1.Telemetry) []*telemetryv1.Telemetry {
	var out []*telemetryv1.Telemetry
	for _, t := range tels {
		if ns == root || t.Namespace == ns || t.Namespace == root {
			out = append(out, t)
		}
	}
	return out
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// JoinMax joins at most max items and says how many were left out.
func JoinMax(items []string, max int) string {
	if len(items) <= max {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:max], ", "), len(items)-max)
}
