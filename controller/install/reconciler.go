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
	"github.com/leanmesh/leanmesh/controller/scope"
	"github.com/leanmesh/leanmesh/controller/validation"
)

const (
	// indexOwner indexes EnvoyFilters and Telemetries by "<ns>/<policy>"
	// from their labels, so stale objects are found without a scan.
	indexOwner = "leanmesh.io/owner"

	// annotationSidecarStatus is set by Istio's injector: only injected pods
	// are reported as missing the library.
	annotationSidecarStatus = "sidecar.istio.io/status"
	labelTLSMode            = "security.istio.io/tlsMode"

	maxReportedWorkloads = 50
)

// Exactly the verbs a run uses (e2e/rbac derives them from the apiserver's
// audit log and fails on a missing or an unused one). Reads go through the
// cache (list, watch); objects are server-side applied (patch, and create
// when new); finalizers/update is what blockOwnerDeletion in the controller
// reference needs; Telemetries are only read and, when an earlier release
// rendered them, deleted; events series are patched.
// +kubebuilder:rbac:groups=leanmesh.io,resources=telemetrypolicies,verbs=list;watch;patch
// +kubebuilder:rbac:groups=leanmesh.io,resources=telemetrypolicies/status,verbs=patch
// +kubebuilder:rbac:groups=leanmesh.io,resources=telemetrypolicies/finalizers,verbs=update
// +kubebuilder:rbac:groups=networking.istio.io,resources=envoyfilters,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=telemetry.istio.io,resources=telemetries,verbs=list;watch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=list;watch
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
	// IstioRevision labels the objects of policies without their own
	// spec.istioRevision (istio.io/rev), so only that istiod applies them.
	IstioRevision string
	Matrix        release.Matrix
	Metrics       *Metrics
	// Checks decide whether a policy may be rendered (validation.Default()
	// when nil), in order; the first failure's reason is the Ready reason.
	Checks validation.Chain
	// LibraryPaths: where the library install puts leanmesh.so (render.Input).
	LibraryPaths []string
	// Proxies is istiod's view of connected proxies (ACK/NACK, version);
	// nil: ConfigAccepted is Unknown.
	Proxies ProxyView

	rollbacks rollbackMemo // apply.go
}

// Reconcile is level-triggered: every call gathers the policy's inputs once,
// evaluates the validation chain, renders once and converges the cluster to
// the result: gather → evaluate → render → apply → status (cert-manager's
// readiness controller has the same shape).
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, retErr error) {
	logger := log.FromContext(ctx)
	defer func() { r.Metrics.observeReconcile(retErr) }()

	var p v1alpha1.TelemetryPolicy
	if err := r.Client.Get(ctx, req.NamespacedName, &p); err != nil {
		if apierrors.IsNotFound(err) {
			// Owner references let the garbage collector remove what the
			// policy owned; this also covers copies outside its namespace
			// and clusters without a garbage collector.
			r.Metrics.forget(req.Namespace, req.Name)
			gone := &v1alpha1.TelemetryPolicy{}
			gone.Namespace, gone.Name = req.Namespace, req.Name
			_, err := r.deleteStale(ctx, gone, nil)
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, err
	}

	// Earlier versions held a finalizer, which made deleting a policy hang
	// once the controller was gone. Drop it; owner references and the
	// NotFound path above clean up instead.
	if controllerutil.ContainsFinalizer(&p, v1alpha1.Finalizer) {
		patch := client.MergeFrom(p.DeepCopy())
		controllerutil.RemoveFinalizer(&p, v1alpha1.Finalizer)
		if err := r.Client.Patch(ctx, &p, patch); err != nil {
			return ctrl.Result{}, err
		}
		if !p.DeletionTimestamp.IsZero() {
			_, err := r.deleteStale(ctx, &p, nil)
			logger.Info("policy deleted; rendered objects removed")
			return ctrl.Result{}, err
		}
	}
	if !p.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}

	st := newStatus(&p)
	defer func() {
		if err := r.writeStatus(ctx, &p, st); err != nil && retErr == nil {
			retErr = err
		}
	}()

	// 1. Gather.
	in, err := r.gather(ctx, &p)
	if err != nil {
		return ctrl.Result{}, err
	}
	st.s.Mode = in.check.Spec.Mode

	// 2. Evaluate. A failing check changes nothing applied when the policy
	// is invalid (the last valid config keeps running) and removes the
	// policy's objects when it conflicts (the older policy decides).
	if failed := r.Checks.Evaluate(&in.check); failed != nil {
		return ctrl.Result{}, r.refuse(ctx, &p, st, failed)
	}
	rel, _ := r.Matrix.Find(in.check.Spec.IstioRelease)
	outcome := in.scope.Outcome(&p, in.pods)
	configured, missing := splitByLibrary(in.objects(outcome.Governed), rel.Envoy)
	st.governed(outcome)
	st.missing(missing, rel)
	r.acceptance(&p, st, configured)
	r.versions(&p, st, configured, proxyVersionOf(in.check.Spec, rel))
	r.Metrics.setMissing(p.Namespace, p.Name, missing)
	if len(missing) > 0 && st.libraryChanged() {
		r.Recorder.Eventf(&p, nil, corev1.EventTypeWarning, v1alpha1.ReasonLibraryMissing, "Select",
			"%d selected pod(s) lack %s=%s and keep Istio's telemetry: %s", countPods(missing), v1alpha1.LabelEnvoyVersion, rel.Envoy, joinMax(workloadKeys(missing), 5))
	}

	// 3. Render once.
	placements, unplaced := placementsFor(&p, r.RootNamespace, rel.Envoy, configured, outcome)
	out, err := render.Render(render.Input{Policy: r.withDefaultRevision(r.carryOver(&p, st, in)), RootNamespace: r.RootNamespace, Matrix: r.Matrix, LibraryPaths: r.LibraryPaths})
	var invalid *render.Error
	if errors.As(err, &invalid) {
		return ctrl.Result{}, r.refuse(ctx, &p, st, &validation.Result{Check: "Render", Reason: v1alpha1.ReasonInvalidConfig, Message: invalid.Msg})
	} else if err != nil {
		return ctrl.Result{}, err
	}
	objs := render.Place(out.Objects, placements)
	if placements != nil && len(placements) == 0 {
		objs = nil // every selected pod is overridden: see placementsFor
	}

	// 4. Delete stale, then apply desired once no other policy's objects
	// still select the pods (break before make: see handover.go).
	if _, err := r.deleteStale(ctx, &p, objs); err != nil {
		return ctrl.Result{}, err
	}
	if blocked, err := r.blockers(ctx, &p, configured); err != nil {
		return ctrl.Result{}, err
	} else if len(blocked) > 0 {
		st.ready(metav1.ConditionFalse, v1alpha1.ReasonHandoverPending, fmt.Sprintf("waiting for another policy to release its pods (they run Istio's telemetry meanwhile): %s", joinMax(blocked, 3)))
		return ctrl.Result{RequeueAfter: handoverWait}, nil
	}
	refs, err := r.apply(ctx, &p, objs)
	if err != nil {
		st.ready(metav1.ConditionFalse, v1alpha1.ReasonApplyFailed, err.Error())
		r.Recorder.Eventf(&p, nil, corev1.EventTypeWarning, v1alpha1.ReasonApplyFailed, "Apply", "%v", err)
		if errors.As(err, new(*rolledBack)) {
			return ctrl.Result{RequeueAfter: rollbackRetry}, nil
		}
		return ctrl.Result{}, err
	}
	st.s.RenderedObjects = refs
	r.Metrics.setRendered(p.Namespace, p.Name, len(refs))

	// 5. Status.
	switch {
	case out.Spec.Mode == v1alpha1.ModeIstio:
		st.ready(metav1.ConditionTrue, v1alpha1.ReasonIstioTelemetry, fmt.Sprintf("Istio's telemetry in effect; only the exposition listener is rendered, so scrape targets stay up (%d object(s))", len(refs)))
	case len(outcome.Governed) == 0 && len(outcome.OverriddenPods) > 0:
		st.ready(metav1.ConditionTrue, v1alpha1.ReasonOverridden, fmt.Sprintf("every selected pod is governed by a more specific policy (%s); %d object(s) applied (objects for new pods are placed when they appear)",
			joinMax(overriders(outcome), 5), len(refs)))
	default:
		msg := fmt.Sprintf("%d object(s) applied for %d pod(s) with the library (Istio %s, Envoy %s)", len(refs), len(configured), out.Release.Istio, out.Release.Envoy)
		if n := len(outcome.OverriddenPods); n > 0 {
			msg += fmt.Sprintf("; %d pod(s) governed by more specific policies", n)
		}
		if len(unplaced) > 0 {
			msg += fmt.Sprintf("; not applied to %s: no label set selects them without also selecting an overridden pod", joinMax(unplaced, 5))
		}
		st.ready(metav1.ConditionTrue, v1alpha1.ReasonApplied, msg)
	}
	return ctrl.Result{}, nil
}

// refuse records a failed check. Conflicts remove the policy's objects;
// invalid config leaves the last applied objects in place.
func (r *Reconciler) refuse(ctx context.Context, p *v1alpha1.TelemetryPolicy, st *statusUpdate, failed *validation.Result) error {
	if failed.Reason != v1alpha1.ReasonInvalidConfig {
		if _, err := r.deleteStale(ctx, p, nil); err != nil {
			return err
		}
		st.s.RenderedObjects = nil
		st.s.GovernedWorkloads, st.s.OverriddenWorkloads = nil, nil
		r.Metrics.setRendered(p.Namespace, p.Name, 0)
	}
	st.ready(metav1.ConditionFalse, failed.Reason, failed.Message)
	r.Recorder.Eventf(p, nil, corev1.EventTypeWarning, failed.Reason, failed.Check, "policy not applied: %s", failed.Message)
	return nil
}

func overriders(o scope.Outcome) []string {
	seen := map[string]bool{}
	var out []string
	for _, k := range o.Overridden {
		if !seen[k.String()] {
			seen[k.String()] = true
			out = append(out, k.String())
		}
	}
	sort.Strings(out)
	return out
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
		if pod.Labels[v1alpha1.LabelEnvoyVersion] == envoy {
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

// policyScopes: namespaces whose objects can overlap with a policy in ns
// ("" meaning all namespaces, for the root namespace).
func (r *Reconciler) policyScopes(ns string) []string {
	if ns == r.RootNamespace {
		return []string{""}
	}
	return []string{ns, r.RootNamespace}
}

func ownedBy(labels map[string]string, p *v1alpha1.TelemetryPolicy) bool {
	return labels[v1alpha1.LabelManagedBy] == v1alpha1.ManagedBy && labels[v1alpha1.LabelPolicy] == p.Name && labels[v1alpha1.LabelPolicyNamespace] == p.Namespace
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
			len(ws), v1alpha1.LabelEnvoyVersion, rel.Envoy, joinMax(workloadKeys(ws), 5)), 1024)
	}
	meta.SetStatusCondition(&u.s.Conditions, c)
}

// governed lists, per workload, the pods the policy decides for and those a
// more specific policy overrides.
func (u *statusUpdate) governed(o scope.Outcome) {
	u.s.GovernedWorkloads = groupWorkloads(o.Governed, nil)
	u.s.OverriddenWorkloads = groupWorkloads(o.OverriddenPods, o.Overridden)
}

// groupWorkloads counts pods per workload (and overriding policy), sorted,
// at most maxReportedWorkloads.
func groupWorkloads(pods []scope.Pod, by map[scope.Key]scope.Key) []v1alpha1.WorkloadRef {
	type key struct{ ns, name, by string }
	counts := map[key]int32{}
	for _, p := range pods {
		k := key{p.Namespace, workloadName(p.Name, p.Labels), ""}
		if by != nil {
			k.by = by[p.Key()].String()
		}
		counts[k]++
	}
	out := make([]v1alpha1.WorkloadRef, 0, len(counts))
	for k, n := range counts {
		out = append(out, v1alpha1.WorkloadRef{Namespace: k.ns, Name: k.name, Pods: n, By: k.by})
	}
	out = sortedCapped(out)
	if len(out) == 0 {
		return nil
	}
	return out
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

// sortedCapped orders status workload lists by namespace, name, then the
// field that tells entries of one workload apart (By or ProxyVersion; the
// other is empty), and keeps the first maxReportedWorkloads.
func sortedCapped(refs []v1alpha1.WorkloadRef) []v1alpha1.WorkloadRef {
	sort.Slice(refs, func(i, j int) bool {
		a, b := refs[i], refs[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		if a.By != b.By {
			return a.By < b.By
		}
		return a.ProxyVersion < b.ProxyVersion
	})
	if len(refs) > maxReportedWorkloads {
		refs = refs[:maxReportedWorkloads]
	}
	return refs
}
