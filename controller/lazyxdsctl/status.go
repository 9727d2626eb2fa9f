package lazyxdsctl

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
)

const maxReported = 50

// policyFacts is what status needs about one policy, read under l.mu.
type policyFacts struct {
	p         *v1alpha1.LazyXDS
	workloads []string // "<ns>/<name>" lazy
	conflicts []string // "<ns>/<name> (Sidecar <x>)"
	deps      int
	seeded    int
	seed      *seedState // copy; nil without seedFromTelemetry
	refused   string     // why the policy is not applied (egressRefusal)
}

// writeStatus updates each policy's status when its content changed.
func (l *Loop) writeStatus(ctx context.Context) {
	l.mu.Lock()
	if !l.statusDirty {
		l.mu.Unlock()
		return
	}
	l.statusDirty = false
	facts := map[types.NamespacedName]*policyFacts{}
	for key, p := range l.policies {
		if p.DeletionTimestamp.IsZero() {
			facts[key] = &policyFacts{p: p}
		}
	}
	for key, p := range l.refused {
		if p.DeletionTimestamp.IsZero() {
			facts[key] = &policyFacts{p: p, refused: l.egressRefusal(p)}
		}
	}
	for k, ws := range l.workloads {
		f := facts[ws.policy]
		if f == nil {
			continue
		}
		if ws.conflict != "" {
			f.conflicts = append(f.conflicts, fmt.Sprintf("%s (Sidecar %s)", k, ws.conflict))
			continue
		}
		f.workloads = append(f.workloads, k.String())
		f.deps += len(l.persisted[k])
		for _, seeded := range l.persisted[k] {
			if seeded {
				f.seeded++
			}
		}
	}
	for key, st := range l.seeds {
		if f := facts[key]; f != nil {
			cp := *st
			f.seed = &cp
		}
	}
	l.mu.Unlock()

	failed := false
	for key, f := range facts {
		run := l.run(key)
		st := l.statusFor(f, run)
		if run.written != nil && equality.Semantic.DeepEqual(*run.written, st) {
			continue
		}
		p := f.p.DeepCopy()
		orig := p.DeepCopy()
		p.Status = st
		if err := l.c.Status().Patch(ctx, p, client.MergeFrom(orig)); err != nil {
			if !apierrors.IsNotFound(err) {
				l.opts.Logger.Error(err, "writing LazyXDS status", "policy", key.String())
				failed = true
			}
			continue
		}
		if (run.written == nil || len(run.written.ConflictingWorkloads) == 0) && len(st.ConflictingWorkloads) > 0 {
			l.event(f.p, corev1.EventTypeWarning, v1alpha1.ReasonUserSidecar, "Select",
				fmt.Sprintf("%d workload(s) already scoped by a user Sidecar are left alone: %s", len(f.conflicts), strings.Join(st.ConflictingWorkloads, ", ")))
		}
		if n := newItems(run.written, st.UnreproducibleRoutes); len(n) > 0 {
			l.event(f.p, corev1.EventTypeWarning, v1alpha1.ReasonUnreproducibleRoutes, "Route",
				"first calls through the lazy egress cannot follow these VirtualService rules (they apply once the dependency is learned): "+strings.Join(n, "; "))
		}
		written := st
		run.written = &written
	}
	if failed {
		l.markStatus()
	}
}

// statusFor computes a policy's status; conditions keep their transition
// times from the current status.
func (l *Loop) statusFor(f *policyFacts, run *policyRuntime) v1alpha1.LazyXDSStatus {
	if f.refused != "" {
		st := v1alpha1.LazyXDSStatus{ObservedGeneration: f.p.Generation,
			Conditions: append([]metav1.Condition(nil), f.p.Status.Conditions...)}
		for _, c := range []string{v1alpha1.ConditionConflict, v1alpha1.ConditionSeeded, v1alpha1.ConditionRoutingReproduced} {
			meta.RemoveStatusCondition(&st.Conditions, c)
		}
		v1alpha1.SetCondition(&st.Conditions, f.p.Generation, v1alpha1.ConditionReady, metav1.ConditionFalse,
			v1alpha1.ReasonEgressNamespaceNotAllowed, f.refused)
		return st
	}
	sort.Strings(f.conflicts)
	st := v1alpha1.LazyXDSStatus{
		ObservedGeneration:  f.p.Generation,
		Conditions:          append([]metav1.Condition(nil), f.p.Status.Conditions...),
		Workloads:           int32(len(f.workloads)),
		LearnedDependencies: int32(f.deps),
		ConflictingWorkloads: func() []string {
			if len(f.conflicts) > maxReported {
				return f.conflicts[:maxReported]
			}
			return f.conflicts
		}(),
	}
	if !run.lastFlush.IsZero() {
		t := metav1.NewTime(run.lastFlush.Truncate(1e9))
		st.LastFlushTime = &t
	}
	gen := f.p.Generation
	ready := metav1.Condition{Type: v1alpha1.ConditionReady, ObservedGeneration: gen}
	var notes []string
	if n := len(run.unselectable); n > 0 {
		var ws []string
		for k, why := range run.unselectable {
			ws = append(ws, k.String()+": "+why)
		}
		sort.Strings(ws)
		if len(ws) > 5 {
			ws = append(ws[:5], fmt.Sprintf("and %d more", n-5))
		}
		notes = append(notes, fmt.Sprintf("%d workload(s) get no Sidecar (%s)", n, strings.Join(ws, "; ")))
	}
	switch {
	case l.persistFailed != "":
		ready.Status, ready.Reason = metav1.ConditionFalse, v1alpha1.ReasonPersistFailed
		ready.Message = "new dependencies are held back until the snapshot can be saved: " + l.persistFailed
	case run.applyErr != "":
		ready.Status, ready.Reason = metav1.ConditionFalse, v1alpha1.ReasonSidecarApplyFailed
		ready.Message = run.applyErr
	case len(f.workloads) == 0:
		ready.Status, ready.Reason = metav1.ConditionTrue, v1alpha1.ReasonNoWorkloads
		ready.Message = "no workload selected"
	default:
		ready.Status, ready.Reason = metav1.ConditionTrue, v1alpha1.ReasonLearning
		ready.Message = fmt.Sprintf("%d workload(s) lazy, %d dependencies learned", len(f.workloads), f.deps)
	}
	if len(notes) > 0 {
		ready.Message += "; " + strings.Join(notes, "; ")
	}
	meta.SetStatusCondition(&st.Conditions, ready)
	conflict := metav1.Condition{Type: v1alpha1.ConditionConflict, ObservedGeneration: gen,
		Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonNoConflict, Message: "no user Sidecar selects a workload of this policy"}
	if len(f.conflicts) > 0 {
		conflict.Status, conflict.Reason = metav1.ConditionTrue, v1alpha1.ReasonUserSidecar
		conflict.Message = fmt.Sprintf("%d workload(s) already scoped by a user Sidecar are left alone (not lazy): %s", len(f.conflicts), strings.Join(st.ConflictingWorkloads, ", "))
	}
	meta.SetStatusCondition(&st.Conditions, conflict)

	st.SeededDependencies = int32(f.seeded)
	if f.p.Spec.SeedFromTelemetry == nil {
		meta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionSeeded)
	} else {
		seeded := metav1.Condition{Type: v1alpha1.ConditionSeeded, ObservedGeneration: gen}
		ss := &v1alpha1.SeedStatus{}
		st.Seed = ss
		switch sd := f.seed; {
		case sd == nil || sd.lastQuery.IsZero():
			seeded.Status, seeded.Reason = metav1.ConditionUnknown, v1alpha1.ReasonSeedPending
			seeded.Message = "querying " + f.p.Spec.SeedFromTelemetry.Prometheus.URL + "; Sidecars wait for the first answer (or its timeout)"
		default:
			t := metav1.NewTime(sd.lastQuery.Truncate(time.Second))
			ss.LastQueryTime = &t
			if !sd.lastOK.IsZero() {
				ok := metav1.NewTime(sd.lastOK.Truncate(time.Second))
				ss.LastSuccessTime = &ok
				ss.Edges, ss.Added, ss.Skipped, ss.Truncated = int32(sd.edges), int32(sd.applied.Added), int32(sd.applied.Skipped()), sd.truncated
			}
			if sd.err != "" {
				seeded.Status, seeded.Reason = metav1.ConditionFalse, v1alpha1.ReasonSeedQueryFailed
				seeded.Message = "learning from access logs only until the query works again: " + sd.err
			} else {
				seeded.Status, seeded.Reason = metav1.ConditionTrue, v1alpha1.ReasonSeeded
				seeded.Message = fmt.Sprintf("%d edges, %d new dependencies, %d skipped (caller not lazy here, or destination not a lazy service)",
					sd.edges, sd.applied.Added, sd.applied.Skipped())
				if sd.truncated {
					seeded.Message += fmt.Sprintf("; truncated at maxEdges (%d): quieter edges are learned from access logs", sd.edges)
				}
			}
		}
		meta.SetStatusCondition(&st.Conditions, seeded)
	}

	st.EgressVirtualServices = int32(l.routing.rendered)
	st.UnreproducibleRoutes = l.routing.problems
	if len(st.UnreproducibleRoutes) > maxReported {
		st.UnreproducibleRoutes = st.UnreproducibleRoutes[:maxReported]
	}
	routing := metav1.Condition{Type: v1alpha1.ConditionRoutingReproduced, ObservedGeneration: gen, Status: metav1.ConditionTrue,
		Reason: v1alpha1.ReasonAllRoutesReproduced, Message: fmt.Sprintf("%d VirtualService(s) of lazy hosts copied to the lazy egress", l.routing.rendered)}
	if n := len(l.routing.problems); n > 0 {
		routing.Status, routing.Reason = metav1.ConditionFalse, v1alpha1.ReasonUnreproducibleRoutes
		routing.Message = fmt.Sprintf("%d rule(s) cannot apply to first calls through the egress (listed in status.unreproducibleRoutes); they apply once the dependency is learned", n)
	}
	meta.SetStatusCondition(&st.Conditions, routing)
	return st
}

// newItems returns the entries of cur that the last written status lacked.
func newItems(prev *v1alpha1.LazyXDSStatus, cur []string) []string {
	var had []string
	if prev != nil {
		had = prev.UnreproducibleRoutes
	}
	var out []string
	for _, c := range cur {
		if !slices.Contains(had, c) {
			out = append(out, c)
		}
	}
	return out
}
