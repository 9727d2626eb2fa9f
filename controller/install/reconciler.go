// Package install reconciles TelemetryPolicy objects: it reads the policy and
// the pods it selects, computes the desired EnvoyFilters with the pure
// renderer (controller/render), applies them with server-side apply, deletes
// the ones it owns that are no longer desired (including the Telemetry
// resources releases before the hybrid LeanMesh mode rendered) and reports the
// outcome in status, events and metrics.
//
// Conflicts are reported, never guessed: a policy overlapping an older one,
// or clashing with a user Telemetry, gets Ready=False and has no effect (its
// objects are removed); an invalid policy gets Ready=False and the cluster is
// left as it was (the last valid config keeps running).
package install

import (
	"context"
	"errors"
	"fmt"
	"sort"

	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/release"
	"github.com/leanmesh/leanmesh/controller/render"
)

const (
	// FieldOwner is the server-side apply manager of everything rendered.
	FieldOwner = "leanmesh"
	// Finalizer removes rendered objects on deletion; owner references
	// cannot, because a mesh-wide policy's Telemetry copies live in other
	// namespaces.
	Finalizer = "leanmesh.io/cleanup"

	// indexOwner indexes EnvoyFilters and Telemetries by "<ns>/<policy>"
	// from their labels, so stale objects are found without a scan.
	indexOwner = "leanmesh.io/owner"

	// annotationSidecarStatus is set by Istio's injector: only injected pods
	// are reported as missing the library.
	annotationSidecarStatus = "sidecar.istio.io/status"
	labelTLSMode            = "security.istio.io/tlsMode"

	maxReportedWorkloads = 50
)

// +kubebuilder:rbac:groups=leanmesh.io,resources=telemetrypolicies,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=leanmesh.io,resources=telemetrypolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=leanmesh.io,resources=telemetrypolicies/finalizers,verbs=update
// +kubebuilder:rbac:groups=networking.istio.io,resources=envoyfilters,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=telemetry.istio.io,resources=telemetries,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconciler reconciles TelemetryPolicy objects.
type Reconciler struct {
	Client client.Client
	// APIReader reads uncached, to see same-named objects the cache filters
	// out (the EnvoyFilter cache holds only leanmesh's own).
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  events.EventRecorder
	// RootNamespace is Istio's config root namespace (mesh-wide policies).
	RootNamespace string
	Matrix        release.Matrix
	Metrics       *Metrics
}

// Reconcile is level-triggered: every call recomputes the desired state
// from the policy and the cluster and converges to it.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, retErr error) {
	logger := log.FromContext(ctx)
	defer func() { r.Metrics.observeReconcile(retErr) }()

	var p v1alpha1.TelemetryPolicy
	if err := r.Client.Get(ctx, req.NamespacedName, &p); err != nil {
		if apierrors.IsNotFound(err) {
			r.Metrics.forget(req.Namespace, req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}

	if !p.DeletionTimestamp.IsZero() {
		if !controllerutil.ContainsFinalizer(&p, Finalizer) {
			return ctrl.Result{}, nil
		}
		if _, err := r.deleteStale(ctx, &p, nil); err != nil {
			return ctrl.Result{}, err
		}
		patch := client.MergeFrom(p.DeepCopy())
		controllerutil.RemoveFinalizer(&p, Finalizer)
		r.Metrics.forget(p.Namespace, p.Name)
		logger.Info("policy deleted; rendered objects removed")
		return ctrl.Result{}, r.Client.Patch(ctx, &p, patch)
	}
	if !controllerutil.ContainsFinalizer(&p, Finalizer) {
		patch := client.MergeFrom(p.DeepCopy())
		controllerutil.AddFinalizer(&p, Finalizer)
		if err := r.Client.Patch(ctx, &p, patch); err != nil {
			return ctrl.Result{}, err
		}
	}

	st := newStatus(&p)
	defer func() {
		if err := r.writeStatus(ctx, &p, st); err != nil && retErr == nil {
			retErr = err
		}
	}()

	// 1. Validate and render. An invalid policy changes nothing.
	pods, err := r.selectedPods(ctx, &p)
	if err != nil {
		return ctrl.Result{}, err
	}
	out, err := render.Render(render.Input{Policy: &p, RootNamespace: r.RootNamespace, Matrix: r.Matrix})
	var invalid *render.Error
	if errors.As(err, &invalid) {
		st.ready(metav1.ConditionFalse, v1alpha1.ReasonInvalidConfig, invalid.Msg)
		r.Recorder.Eventf(&p, nil, corev1.EventTypeWarning, v1alpha1.ReasonInvalidConfig, "Render", "policy not applied: %s", invalid.Msg)
		return ctrl.Result{}, nil
	} else if err != nil {
		return ctrl.Result{}, err
	}
	configured, missing := splitByLibrary(pods, out.Release.Envoy)
	st.missing(missing, out.Release)
	r.Metrics.setMissing(p.Namespace, p.Name, missing)
	if len(missing) > 0 && st.libraryChanged() {
		r.Recorder.Eventf(&p, nil, corev1.EventTypeWarning, v1alpha1.ReasonLibraryMissing, "Select",
			"%d selected pod(s) lack %s=%s and keep Istio's telemetry: %s", countPods(missing), render.LabelEnvoyVersion, out.Release.Envoy, joinMax(workloadKeys(missing), 5))
	}
	st.s.Mode = out.Spec.Mode

	// 2. Conflicts: the policy then has no effect.
	if reason, msg, err := r.conflicts(ctx, &p, out); err != nil {
		return ctrl.Result{}, err
	} else if reason != "" {
		if _, err := r.deleteStale(ctx, &p, nil); err != nil {
			return ctrl.Result{}, err
		}
		st.s.RenderedObjects = nil
		r.Metrics.setRendered(p.Namespace, p.Name, 0)
		st.ready(metav1.ConditionFalse, reason, msg)
		r.Recorder.Eventf(&p, nil, corev1.EventTypeWarning, reason, "Apply", "policy not applied: %s", msg)
		return ctrl.Result{}, nil
	}

	// 3. Apply desired, delete stale.
	refs, err := r.apply(ctx, &p, out.Objects)
	if err != nil {
		st.ready(metav1.ConditionFalse, v1alpha1.ReasonApplyFailed, err.Error())
		r.Recorder.Eventf(&p, nil, corev1.EventTypeWarning, v1alpha1.ReasonApplyFailed, "Apply", "%v", err)
		return ctrl.Result{}, err
	}
	if _, err := r.deleteStale(ctx, &p, out.Objects); err != nil {
		return ctrl.Result{}, err
	}
	st.s.RenderedObjects = refs
	r.Metrics.setRendered(p.Namespace, p.Name, len(refs))
	if out.Spec.Mode == v1alpha1.ModeIstio {
		st.ready(metav1.ConditionTrue, v1alpha1.ReasonIstioMode, fmt.Sprintf("Istio's telemetry in effect; only the exposition listener is rendered, so scrape targets stay up (%d object(s))", len(refs)))
	} else {
		st.ready(metav1.ConditionTrue, v1alpha1.ReasonApplied, fmt.Sprintf("%d object(s) applied for %d pod(s) with the library (Istio %s, Envoy %s)",
			len(refs), len(configured), out.Release.Istio, out.Release.Envoy))
	}
	return ctrl.Result{}, nil
}

// selectedPods lists pods matching the policy's selector in its scope (all
// namespaces for the root namespace), from the metadata-only cache.
func (r *Reconciler) selectedPods(ctx context.Context, p *v1alpha1.TelemetryPolicy) ([]metav1.PartialObjectMetadata, error) {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PodList"))
	opts := []client.ListOption{client.MatchingLabels(p.Spec.Selector.MatchLabels)}
	if p.Namespace != r.RootNamespace {
		opts = append(opts, client.InNamespace(p.Namespace))
	}
	if err := r.Client.List(ctx, list, opts...); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// splitByLibrary separates pods carrying the library for this Envoy from
// injected pods that lack it (or carry another version). Pods without a
// sidecar are neither: leanmesh has nothing to do with them.
func splitByLibrary(pods []metav1.PartialObjectMetadata, envoy string) (configured []metav1.PartialObjectMetadata, missing []v1alpha1.WorkloadRef) {
	counts := map[[2]string]int32{}
	for _, pod := range pods {
		if !pod.DeletionTimestamp.IsZero() {
			continue
		}
		if pod.Labels[render.LabelEnvoyVersion] == envoy {
			configured = append(configured, pod)
			continue
		}
		if _, injected := pod.Annotations[annotationSidecarStatus]; !injected && pod.Labels[labelTLSMode] == "" {
			continue
		}
		counts[[2]string{pod.Namespace, workloadName(pod.Name, pod.Labels)}]++
	}
	for k, n := range counts {
		missing = append(missing, v1alpha1.WorkloadRef{Namespace: k[0], Name: k[1], Pods: n})
	}
	sort.Slice(missing, func(i, j int) bool {
		if missing[i].Namespace != missing[j].Namespace {
			return missing[i].Namespace < missing[j].Namespace
		}
		return missing[i].Name < missing[j].Name
	})
	return configured, missing
}

func countPods(ws []v1alpha1.WorkloadRef) int {
	n := 0
	for _, w := range ws {
		n += int(w.Pods)
	}
	return n
}

func workloadKeys(ws []v1alpha1.WorkloadRef) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.Namespace + "/" + w.Name
	}
	return out
}

// conflicts returns a reason and message when the policy must not apply.
func (r *Reconciler) conflicts(ctx context.Context, p *v1alpha1.TelemetryPolicy, out *render.Output) (string, string, error) {
	var others []v1alpha1.TelemetryPolicy
	for _, ns := range r.policyScopes(p.Namespace) {
		var list v1alpha1.TelemetryPolicyList
		opts := []client.ListOption{}
		if ns != "" {
			opts = append(opts, client.InNamespace(ns))
		}
		if err := r.Client.List(ctx, &list, opts...); err != nil {
			return "", "", err
		}
		others = append(others, list.Items...)
	}
	if over := overlappingPolicies(p, others, r.RootNamespace); len(over) > 0 {
		return v1alpha1.ReasonConflict, fmt.Sprintf("selects workloads already selected by older polic%s %s; narrow the selectors or delete one",
			plural(len(over), "y", "ies"), joinMax(over, 5)), nil
	}
	if out.Spec.Mode == v1alpha1.ModeIstio {
		return "", "", nil
	}
	var tels []*telemetryv1.Telemetry
	for _, ns := range r.policyScopes(p.Namespace) {
		var list telemetryv1.TelemetryList
		opts := []client.ListOption{}
		if ns != "" {
			opts = append(opts, client.InNamespace(ns))
		}
		if err := r.Client.List(ctx, &list, opts...); err != nil {
			return "", "", err
		}
		tels = append(tels, list.Items...)
	}
	if clash := conflictingTelemetries(out.Spec.Mode, p.Namespace, r.RootNamespace, out.PodSelector, tels); len(clash) > 0 {
		return v1alpha1.ReasonTelemetryClash, fmt.Sprintf("Telemetry %s also configures metrics for the selected workloads (%s mode); remove its metrics settings or narrow its selector",
			joinMax(clash, 5), out.Spec.Mode), nil
	}
	return "", "", nil
}

// policyScopes: namespaces whose objects can overlap with a policy in ns
// ("" meaning all namespaces, for the root namespace).
func (r *Reconciler) policyScopes(ns string) []string {
	if ns == r.RootNamespace {
		return []string{""}
	}
	return []string{ns, r.RootNamespace}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// apply server-side-applies every desired object. It first refuses to take
// over an object of the same name that this policy does not own.
func (r *Reconciler) apply(ctx context.Context, p *v1alpha1.TelemetryPolicy, objs []client.Object) ([]v1alpha1.ObjectRef, error) {
	for _, o := range objs {
		existing := &metav1.PartialObjectMetadata{}
		existing.SetGroupVersionKind(o.GetObjectKind().GroupVersionKind())
		reader := r.APIReader
		if reader == nil {
			reader = r.Client
		}
		err := reader.Get(ctx, client.ObjectKeyFromObject(o), existing)
		if err == nil && !ownedBy(existing.Labels, p) {
			return nil, fmt.Errorf("%s %s/%s exists and is not managed by this policy", o.GetObjectKind().GroupVersionKind().Kind, o.GetNamespace(), o.GetName())
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, err
		}
	}
	refs := make([]v1alpha1.ObjectRef, 0, len(objs))
	for _, o := range objs {
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
		if err := r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			return nil, fmt.Errorf("applying %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
		refs = append(refs, v1alpha1.ObjectRef{APIVersion: u.GetAPIVersion(), Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName()})
	}
	return refs, nil
}

func ownedBy(labels map[string]string, p *v1alpha1.TelemetryPolicy) bool {
	return labels[render.LabelManagedBy] == render.ManagedBy && labels[render.LabelPolicy] == p.Name && labels[render.LabelPolicyNamespace] == p.Namespace
}

func ownerKey(ns, name string) string { return ns + "/" + name }

// deleteStale deletes objects owned by the policy (by label, through the
// owner index) that are not in keep. It returns how many it deleted.
func (r *Reconciler) deleteStale(ctx context.Context, p *v1alpha1.TelemetryPolicy, keep []client.Object) (int, error) {
	want := map[string]bool{}
	for _, o := range keep {
		want[o.GetObjectKind().GroupVersionKind().Kind+"/"+o.GetNamespace()+"/"+o.GetName()] = true
	}
	var owned []client.Object
	var efs networkingv1alpha3.EnvoyFilterList
	if err := r.Client.List(ctx, &efs, client.MatchingFields{indexOwner: ownerKey(p.Namespace, p.Name)}); err != nil {
		return 0, err
	}
	for _, o := range efs.Items {
		owned = append(owned, o)
	}
	var tels telemetryv1.TelemetryList
	if err := r.Client.List(ctx, &tels, client.MatchingFields{indexOwner: ownerKey(p.Namespace, p.Name)}); err != nil {
		return 0, err
	}
	for _, o := range tels.Items {
		owned = append(owned, o)
	}
	n := 0
	for _, o := range owned {
		kind := "EnvoyFilter"
		if _, ok := o.(*telemetryv1.Telemetry); ok {
			kind = "Telemetry"
		}
		if want[kind+"/"+o.GetNamespace()+"/"+o.GetName()] {
			continue
		}
		if err := r.Client.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
			return n, err
		}
		n++
	}
	return n, nil
}

// statusUpdate accumulates the new status.
type statusUpdate struct {
	p   *v1alpha1.TelemetryPolicy
	old v1alpha1.TelemetryPolicyStatus
	s   v1alpha1.TelemetryPolicyStatus
}

func newStatus(p *v1alpha1.TelemetryPolicy) *statusUpdate {
	old := *p.Status.DeepCopy()
	s := *p.Status.DeepCopy()
	s.ObservedGeneration = p.Generation
	return &statusUpdate{p: p, old: old, s: s}
}

func (u *statusUpdate) ready(status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&u.s.Conditions, metav1.Condition{Type: v1alpha1.ConditionReady, Status: status, Reason: reason,
		Message: truncate(msg, 1024), ObservedGeneration: u.p.Generation})
}

func (u *statusUpdate) missing(ws []v1alpha1.WorkloadRef, rel release.Release) {
	if len(ws) > maxReportedWorkloads {
		ws = ws[:maxReportedWorkloads]
	}
	u.s.WorkloadsMissingLibrary = ws
	c := metav1.Condition{Type: v1alpha1.ConditionLibraryPresent, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonAllLabelled,
		Message: "every selected injected pod carries the library", ObservedGeneration: u.p.Generation}
	if len(ws) > 0 {
		c.Status, c.Reason = metav1.ConditionFalse, v1alpha1.ReasonLibraryMissing
		c.Message = truncate(fmt.Sprintf("%d workload(s) lack %s=%s and keep Istio's telemetry: %s",
			len(ws), render.LabelEnvoyVersion, rel.Envoy, joinMax(workloadKeys(ws), 5)), 1024)
	}
	meta.SetStatusCondition(&u.s.Conditions, c)
}

// libraryChanged: emit the missing-library event only when the set changed.
func (u *statusUpdate) libraryChanged() bool {
	return !equality.Semantic.DeepEqual(u.old.WorkloadsMissingLibrary, u.s.WorkloadsMissingLibrary)
}

func (r *Reconciler) writeStatus(ctx context.Context, p *v1alpha1.TelemetryPolicy, u *statusUpdate) error {
	if equality.Semantic.DeepEqual(u.old, u.s) {
		return nil
	}
	patch := client.MergeFrom(p.DeepCopy())
	p.Status = u.s
	return r.Client.Status().Patch(ctx, p, patch)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
