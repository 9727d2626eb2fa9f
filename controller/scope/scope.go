// Package scope decides which TelemetryPolicy governs each workload, with the
// precedence of Istio's Telemetry API (pilot/pkg/model/telemetry.go,
// applicableTelemetries): the most specific policy wins — a workload
// selector in the workload's namespace over a namespace-wide policy over the
// root namespace — and ties go to the oldest, ordered as Istio orders config
// (pilot/pkg/model/config.go, configCompareByCreationTime: creation time,
// then name, then namespace).
//
// Two policies of the same rank whose selectors can match one pod are a
// conflict, decided on the selectors rather than today's pods because the
// rendered objects apply to tomorrow's pods too; the newer one is refused.
// Istio's analyzers find the same pairs ambiguous (several selector-less
// Telemetries in one namespace; several selecting one workload). A
// conflicting policy governs nothing.
//
// Root-namespace policies keep leanmesh's EnvoyFilter semantics: with or
// without a selector they reach every namespace (an EnvoyFilter in the root
// namespace does, unlike a Telemetry with a selector); with a selector they
// outrank the selector-less mesh default.
//
// Pure: no client, no cgo.
package scope

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
)

// Rank orders scopes; a higher rank is more specific and wins.
type Rank int

const (
	RankMesh         Rank = iota // root namespace, no selector
	RankMeshSelector             // root namespace, selector
	RankNamespace                // other namespace, no selector
	RankWorkload                 // other namespace, selector
)

func (r Rank) String() string {
	return [...]string{"mesh", "mesh-selector", "namespace", "workload"}[r]
}

// Key names a policy or a pod as namespace/name.
type Key struct{ Namespace, Name string }

func (k Key) String() string { return k.Namespace + "/" + k.Name }

// Pod is what precedence needs of a pod.
type Pod struct {
	Namespace, Name string
	Labels          map[string]string
}

func (p Pod) Key() Key { return Key{p.Namespace, p.Name} }

// Resolver holds the policies of one resolution.
type Resolver struct {
	root     string
	policies []*v1alpha1.TelemetryPolicy // live ones, in Istio's order
	conflict map[Key][]Key
}

// New orders the policies and finds the conflicts. Policies being deleted
// take no part.
func New(root string, policies []v1alpha1.TelemetryPolicy) *Resolver {
	r := &Resolver{root: root, conflict: map[Key][]Key{}}
	for i := range policies {
		if policies[i].DeletionTimestamp.IsZero() {
			r.policies = append(r.policies, &policies[i])
		}
	}
	slices.SortFunc(r.policies, compare)
	for i, p := range r.policies {
		for _, older := range r.policies[:i] {
			if r.RankOf(older) == r.RankOf(p) && r.scopesOverlap(older.Namespace, p.Namespace) &&
				selectorsOverlap(older.Spec.Selector.MatchLabels, p.Spec.Selector.MatchLabels) {
				r.conflict[keyOf(p)] = append(r.conflict[keyOf(p)], keyOf(older))
			}
		}
	}
	return r
}

// compare is Istio's configCompareByCreationTime.
func compare(a, b *v1alpha1.TelemetryPolicy) int {
	if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	if c := strings.Compare(a.Name, b.Name); c != 0 {
		return c
	}
	return strings.Compare(a.Namespace, b.Namespace)
}

func keyOf(p *v1alpha1.TelemetryPolicy) Key { return Key{p.Namespace, p.Name} }

// RankOf returns the policy's scope rank.
func (r *Resolver) RankOf(p *v1alpha1.TelemetryPolicy) Rank {
	sel := len(p.Spec.Selector.MatchLabels) > 0
	switch {
	case p.Namespace == r.root && sel:
		return RankMeshSelector
	case p.Namespace == r.root:
		return RankMesh
	case sel:
		return RankWorkload
	}
	return RankNamespace
}

// scopesOverlap: a policy reaches its namespace, or every namespace from
// the root namespace.
func (r *Resolver) scopesOverlap(a, b string) bool { return a == b || a == r.root || b == r.root }

// selectorsOverlap reports whether one pod can carry both matchLabels
// selectors: they overlap unless some key demands two different values.
func selectorsOverlap(a, b map[string]string) bool {
	for k, v := range a {
		if w, ok := b[k]; ok && w != v {
			return false
		}
	}
	return true
}

// Conflicts returns the older same-rank policies p overlaps with; p is
// refused when there is any.
func (r *Resolver) Conflicts(p Key) []Key { return r.conflict[p] }

// Applies reports whether the policy's scope and selector reach the pod.
func (r *Resolver) Applies(p *v1alpha1.TelemetryPolicy, pod Pod) bool {
	if p.Namespace != r.root && p.Namespace != pod.Namespace {
		return false
	}
	for k, v := range p.Spec.Selector.MatchLabels {
		if lv, ok := pod.Labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

// Governor returns the policy governing the pod: the highest-ranked live,
// non-conflicting policy that applies, the oldest among equals. ok is false
// when none applies.
func (r *Resolver) Governor(pod Pod) (Key, bool) {
	var best *v1alpha1.TelemetryPolicy
	for _, p := range r.policies { // oldest first, so > keeps the oldest of a rank
		if len(r.conflict[keyOf(p)]) > 0 || !r.Applies(p, pod) {
			continue
		}
		if best == nil || r.RankOf(p) > r.RankOf(best) {
			best = p
		}
	}
	if best == nil {
		return Key{}, false
	}
	return keyOf(best), true
}

// Outcome is how one policy fares over a set of pods.
type Outcome struct {
	// Governed are the pods the policy decides for.
	Governed []Pod
	// Overridden maps pods the policy selects to the more specific policy
	// that governs them instead.
	Overridden map[Key]Key
	// OverriddenPods are those pods, in order.
	OverriddenPods []Pod
}

// Outcome resolves every pod the policy applies to.
func (r *Resolver) Outcome(p *v1alpha1.TelemetryPolicy, pods []Pod) Outcome {
	out := Outcome{Overridden: map[Key]Key{}}
	if len(r.conflict[keyOf(p)]) > 0 {
		return out
	}
	for _, pod := range pods {
		if !r.Applies(p, pod) {
			continue
		}
		g, ok := r.Governor(pod)
		switch {
		case !ok:
		case g == keyOf(p):
			out.Governed = append(out.Governed, pod)
		default:
			out.Overridden[pod.Key()] = g
			out.OverriddenPods = append(out.OverriddenPods, pod)
		}
	}
	sortPods(out.Governed)
	sortPods(out.OverriddenPods)
	return out
}

func sortPods(ps []Pod) {
	slices.SortFunc(ps, func(a, b Pod) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
}

// Describe is "ns/name (rank)", for messages.
func (r *Resolver) Describe(k Key) string {
	for _, p := range r.policies {
		if keyOf(p) == k {
			return fmt.Sprintf("%s (%s scope)", k, r.RankOf(p))
		}
	}
	return k.String()
}
