package install

import (
	"context"

	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/proxystatus"
)

// CacheOptions keeps the manager's cache small: only leanmesh's own
// EnvoyFilters are cached (user Telemetries are needed for conflicts).
func CacheOptions() cache.Options {
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&networkingv1alpha3.EnvoyFilter{}: {Label: labels.SelectorFromSet(labels.Set{v1alpha1.LabelManagedBy: v1alpha1.ManagedBy})},
	}}
}

// SetupWithManager registers the owner index and the watches:
//   - policies (own changes, and neighbours' changes, which can end a conflict);
//   - rendered objects (drift: edits and deletions by others are undone);
//   - user Telemetries (conflicts appear and disappear);
//   - pod metadata (label changes move pods in and out of selection).
func (r *Reconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	ownerIndex := func(o client.Object) []string {
		l := o.GetLabels()
		if l[v1alpha1.LabelManagedBy] != v1alpha1.ManagedBy || l[v1alpha1.LabelPolicy] == "" {
			return nil
		}
		return []string{ownerKey(l[v1alpha1.LabelPolicyNamespace], l[v1alpha1.LabelPolicy])}
	}
	for _, obj := range []client.Object{&networkingv1alpha3.EnvoyFilter{}, &telemetryv1.Telemetry{}} {
		if err := mgr.GetFieldIndexer().IndexField(ctx, obj, indexOwner, ownerIndex); err != nil {
			return err
		}
	}
	b := ctrl.NewControllerManagedBy(mgr)
	if poller, ok := r.Proxies.(*proxystatus.Poller); ok && poller != nil {
		// A NACK or version change reconciles the policies in reach at
		// once, so it is on the policy within one poll interval.
		ch := make(chan event.GenericEvent, 1024)
		poller.OnChange = proxyChanges(ch)
		if err := mgr.Add(poller); err != nil {
			return err
		}
		b = b.WatchesRawSource(source.Channel(ch, handler.EnqueueRequestsFromMapFunc(r.proxyEvents)))
	}
	return b.
		Named("telemetrypolicy").
		// Status writes do not requeue the policy: only spec and deletion do.
		For(&v1alpha1.TelemetryPolicy{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, deletionPredicate()))).
		Watches(&v1alpha1.TelemetryPolicy{}, handler.EnqueueRequestsFromMapFunc(r.neighbours),
			builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, deletionPredicate()))).
		Watches(&networkingv1alpha3.EnvoyFilter{}, handler.EnqueueRequestsFromMapFunc(r.ownerOrScope)).
		Watches(&telemetryv1.Telemetry{}, handler.EnqueueRequestsFromMapFunc(r.ownerOrScope)).
		WatchesMetadata(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.podPolicies),
			builder.WithPredicates(predicate.Or(predicate.LabelChangedPredicate{}, deletionPredicate(), predicate.AnnotationChangedPredicate{}))).
		Complete(r)
}

// deletionPredicate passes creates and deletes (and updates that start a
// deletion), which the generation/label predicates alone would drop.
func deletionPredicate() predicate.Funcs {
	return predicate.Funcs{
		CreateFunc:  func(e event.CreateEvent) bool { return true },
		DeleteFunc:  func(e event.DeleteEvent) bool { return true },
		UpdateFunc:  func(e event.UpdateEvent) bool { return e.ObjectNew.GetDeletionTimestamp() != nil },
		GenericFunc: func(e event.GenericEvent) bool { return false },
	}
}

// policiesIn returns requests for policies in ns and in the root namespace
// (or everywhere when ns is the root namespace).
func (r *Reconciler) policiesIn(ctx context.Context, ns string, match func(*v1alpha1.TelemetryPolicy) bool) []reconcile.Request {
	var out []reconcile.Request
	for _, scope := range r.policyScopes(ns) {
		var list v1alpha1.TelemetryPolicyList
		opts := []client.ListOption{}
		if scope != "" {
			opts = append(opts, client.InNamespace(scope))
		}
		if err := r.Client.List(ctx, &list, opts...); err != nil {
			log.FromContext(ctx).Error(err, "listing policies for a watch event")
			continue
		}
		for i := range list.Items {
			if match == nil || match(&list.Items[i]) {
				out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: list.Items[i].Namespace, Name: list.Items[i].Name}})
			}
		}
	}
	return out
}

// neighbours: a policy change can start or end a conflict with policies in
// the same scope.
func (r *Reconciler) neighbours(ctx context.Context, o client.Object) []reconcile.Request {
	return r.policiesIn(ctx, o.GetNamespace(), func(p *v1alpha1.TelemetryPolicy) bool {
		return p.Namespace != o.GetNamespace() || p.Name != o.GetName()
	})
}

// ownerOrScope maps a rendered object to its policy, and a user object to
// the policies whose conflicts it may change.
func (r *Reconciler) ownerOrScope(ctx context.Context, o client.Object) []reconcile.Request {
	l := o.GetLabels()
	if l[v1alpha1.LabelManagedBy] == v1alpha1.ManagedBy && l[v1alpha1.LabelPolicy] != "" {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: l[v1alpha1.LabelPolicyNamespace], Name: l[v1alpha1.LabelPolicy]}}}
	}
	return r.policiesIn(ctx, o.GetNamespace(), nil)
}

// podPolicies maps a pod to the policies whose selector matches it.
func (r *Reconciler) podPolicies(ctx context.Context, o client.Object) []reconcile.Request {
	podLabels := labels.Set(o.GetLabels())
	return r.policiesIn(ctx, o.GetNamespace(), func(p *v1alpha1.TelemetryPolicy) bool {
		return labels.SelectorFromSet(p.Spec.Selector.MatchLabels).Matches(podLabels)
	})
}
