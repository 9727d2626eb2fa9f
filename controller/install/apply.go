package install

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/render"
)

// apply writes a policy's objects all or nothing, as the user sees it
// (issue #18: a refused third object left the first two applied):
//
//  1. It refuses to take over an object of the same name that this policy
//     does not own, and keeps a copy of each object it will change.
//  2. Every object is server-side applied as a dry run first: schema,
//     admission (webhooks, ValidatingAdmissionPolicies) and size checks run
//     without persisting, so a refusal names the object and nothing is
//     written — the previous generation keeps running.
//  3. The real applies. If one still fails (admission that differs from
//     its dry run, an etcd error, a race), the objects written before it
//     are put back: the ones it created are deleted, the ones it changed are
//     re-applied from the copies of step 1.
//
// The error says which object failed, why, and what was rolled back. After
// a rollback the reconciler retries after rollbackRetry rather than with
// its fast back-off: each attempt exposes the earlier objects' new
// generation for the moment between their apply and the rollback.
func (r *Reconciler) apply(ctx context.Context, p *v1alpha1.TelemetryPolicy, objs []client.Object) ([]v1alpha1.ObjectRef, error) {
	key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	if err := r.rollbacks.pending(key, p.Generation); err != nil {
		// Our own apply and rollback wake the policy up again (it watches
		// its objects); without this it would apply and roll back in a loop.
		return nil, err
	}
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	desired := make([]*unstructured.Unstructured, 0, len(objs))
	previous := make([]*unstructured.Unstructured, len(objs)) // nil: did not exist
	for i, o := range objs {
		gvk := o.GetObjectKind().GroupVersionKind()
		existing := &unstructured.Unstructured{}
		existing.SetGroupVersionKind(gvk)
		err := reader.Get(ctx, client.ObjectKeyFromObject(o), existing)
		switch {
		case err == nil && !ownedBy(existing.GetLabels(), p):
			return nil, fmt.Errorf("%s %s/%s exists and is not managed by this policy", gvk.Kind, o.GetNamespace(), o.GetName())
		case err == nil:
			previous[i] = existing
		case !apierrors.IsNotFound(err):
			return nil, err
		}
		if o.GetNamespace() == p.Namespace {
			// Garbage collection as a second line behind the finalizer.
			if err := controllerutil.SetControllerReference(p, o, r.Scheme); err != nil {
				return nil, err
			}
		}
		u, err := render.Unstructured(o)
		if err != nil {
			return nil, err
		}
		desired = append(desired, u)
	}

	ssa := func(u *unstructured.Unstructured, opts ...client.ApplyOption) error {
		opts = append(opts, client.FieldOwner(v1alpha1.FieldOwner), client.ForceOwnership)
		return r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u.DeepCopy()), opts...)
	}
	for _, u := range desired {
		if err := ssa(u, client.DryRunAll); err != nil {
			return nil, fmt.Errorf("%s %s/%s refused (dry run): %w; nothing applied, the previous objects stay", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
	}

	r.rollbacks.forget(key)
	refs := make([]v1alpha1.ObjectRef, 0, len(desired))
	for i, u := range desired {
		if err := ssa(u); err != nil {
			failed := fmt.Errorf("applying %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
			err := r.rollback(ctx, failed, desired[:i], previous[:i], ssa)
			r.rollbacks.note(key, p.Generation, err)
			return nil, err
		}
		refs = append(refs, v1alpha1.ObjectRef{APIVersion: u.GetAPIVersion(), Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName()})
	}
	return refs, nil
}

// rollback undoes the applies before a failed one, last first.
func (r *Reconciler) rollback(ctx context.Context, failed error, applied, previous []*unstructured.Unstructured,
	ssa func(*unstructured.Unstructured, ...client.ApplyOption) error) error {
	var errs []error
	for i := len(applied) - 1; i >= 0; i-- {
		u := applied[i]
		var err error
		if prev := previous[i]; prev == nil {
			err = client.IgnoreNotFound(r.Client.Delete(ctx, u.DeepCopy()))
		} else {
			err = ssa(restorable(prev))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w; rolling back the %d object(s) applied before it failed: %w", failed, len(applied), errors.Join(errs...))
	}
	return &rolledBack{fmt.Errorf("%w; rolled back the %d object(s) applied before it, the previous objects stay (retried in %s)", failed, len(applied), rollbackRetry)}
}

// rollbackRetry spaces attempts that end in a rollback.
const rollbackRetry = 30 * time.Second

// rolledBack is an apply that failed after earlier objects were written
// and was undone.
type rolledBack struct{ error }

func (e *rolledBack) Unwrap() error { return e.error }

// restorable is a stored object as an apply configuration: what the server
// owns (identity, versions, managed fields, status) removed.
func restorable(stored *unstructured.Unstructured) *unstructured.Unstructured {
	u := stored.DeepCopy()
	for _, f := range []string{"resourceVersion", "uid", "generation", "creationTimestamp", "managedFields", "selfLink"} {
		unstructured.RemoveNestedField(u.Object, "metadata", f)
	}
	delete(u.Object, "status")
	return u
}

// rollbackMemo remembers, per policy, the generation whose apply was rolled
// back: the same generation is not applied again before rollbackRetry.
type rollbackMemo struct {
	mu sync.Mutex
	m  map[types.NamespacedName]rollbackNote
}

type rollbackNote struct {
	generation int64
	until      time.Time
	err        error
}

func (m *rollbackMemo) note(key types.NamespacedName, gen int64, err error) {
	if !errors.As(err, new(*rolledBack)) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		m.m = map[types.NamespacedName]rollbackNote{}
	}
	m.m[key] = rollbackNote{generation: gen, until: time.Now().Add(rollbackRetry), err: err}
}

// pending returns the remembered error while gen's hold-off lasts.
func (m *rollbackMemo) pending(key types.NamespacedName, gen int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.m[key]
	if !ok || n.generation != gen || time.Now().After(n.until) {
		return nil
	}
	return n.err
}

func (m *rollbackMemo) forget(key types.NamespacedName) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.m, key)
}
