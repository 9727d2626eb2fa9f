package lazyxdsctl

import (
	"context"
	"fmt"
	"sort"
	"strings"

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
	if f.p.Spec.SeedFromTelemetry {
		notes = append(notes, "seedFromTelemetry is not implemented and has no effect")
	}
	switch {
	case l.persistFailed != "":
		ready.Status, ready.Reason = metav1.ConditionFalse, v1alpha1.ReasonPersistFailed
		ready.Message = "new dependencies are held back until the snapshot can be saved: " + l.persistFailed
	case run.applyErr != "":
		ready.Status, ready.Reason = metav1.ConditionFalse, v1alpha1.ReasonSidecarApplyErr
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
	return st
}
