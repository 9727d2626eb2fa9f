package install

import (
	"context"
	"maps"
	"sort"

	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/render"
	"github.com/leanmesh/leanmesh/controller/scope"
	"github.com/leanmesh/leanmesh/controller/validation"
)

// inputs is everything one reconcile reads from the cluster, read once.
type inputs struct {
	check validation.Input
	scope *scope.Resolver
	// pods the policy's selector reaches, live ones only, by key.
	pods  []scope.Pod
	byKey map[scope.Key]metav1.PartialObjectMetadata
}

// gather reads the policies, pods and Telemetry resources in the policy's
// reach (its namespace and the root namespace, or everything for a
// root-namespace policy) from the cache.
func (r *Reconciler) gather(ctx context.Context, p *v1alpha1.TelemetryPolicy) (*inputs, error) {
	in := &inputs{byKey: map[scope.Key]metav1.PartialObjectMetadata{}}
	var policies []v1alpha1.TelemetryPolicy
	var tels []*telemetryv1.Telemetry
	for _, ns := range r.policyScopes(p.Namespace) {
		opts := []client.ListOption{}
		if ns != "" {
			opts = append(opts, client.InNamespace(ns))
		}
		var pl v1alpha1.TelemetryPolicyList
		if err := r.Client.List(ctx, &pl, opts...); err != nil {
			return nil, err
		}
		policies = append(policies, pl.Items...)
		var tl telemetryv1.TelemetryList
		if err := r.Client.List(ctx, &tl, opts...); err != nil {
			return nil, err
		}
		tels = append(tels, tl.Items...)
	}
	// The policy as read now (it may be missing from a lagging list).
	found := false
	for i := range policies {
		if policies[i].Namespace == p.Namespace && policies[i].Name == p.Name {
			policies[i] = *p
			found = true
		}
	}
	if !found {
		policies = append(policies, *p)
	}
	in.scope = scope.New(r.RootNamespace, policies)

	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PodList"))
	opts := []client.ListOption{client.MatchingLabels(p.Spec.Selector.MatchLabels)}
	if p.Namespace != r.RootNamespace {
		opts = append(opts, client.InNamespace(p.Namespace))
	}
	if err := r.Client.List(ctx, list, opts...); err != nil {
		return nil, err
	}
	for _, pod := range list.Items {
		if !pod.DeletionTimestamp.IsZero() {
			continue
		}
		sp := scope.Pod{Namespace: pod.Namespace, Name: pod.Name, Labels: pod.Labels}
		in.pods = append(in.pods, sp)
		in.byKey[sp.Key()] = pod
	}

	checks := r.Checks
	if checks == nil {
		checks = validation.Default()
	}
	r.Checks = checks
	in.check = validation.Input{
		Policy: p, Spec: render.Defaults(p.Spec), RootNamespace: r.RootNamespace, Matrix: r.Matrix,
		Scope: in.scope, Telemetries: tels,
	}
	return in, nil
}

// objects returns the gathered pod objects for scope pods.
func (in *inputs) objects(pods []scope.Pod) []metav1.PartialObjectMetadata {
	out := make([]metav1.PartialObjectMetadata, 0, len(pods))
	for _, p := range pods {
		out = append(out, in.byKey[p.Key()])
	}
	return out
}

// placementsFor decides where the policy's objects go (see
// render.Placement). Nothing overridden: nil, the objects stay where Render
// puts them; overridden pods and nothing to place: empty, not nil (no
// objects at all) (its namespace; the whole mesh from the root namespace). With
// overridden pods: one copy per namespace without exceptions, one per
// governed workload where there are. unplaced lists workloads whose stable
// labels also select an overridden pod: they keep Istio's telemetry rather
// than take the override's pods with them.
func placementsFor(p *v1alpha1.TelemetryPolicy, root, envoy string, configured []metav1.PartialObjectMetadata, o scope.Outcome) (placements []render.Placement, unplaced []string) {
	var excluded []scope.Pod
	for _, pod := range o.OverriddenPods {
		if pod.Labels[v1alpha1.LabelEnvoyVersion] == envoy {
			excluded = append(excluded, pod)
		}
	}
	if len(excluded) == 0 {
		return nil, nil
	}
	base := maps.Clone(p.Spec.Selector.MatchLabels)
	if base == nil {
		base = map[string]string{}
	}
	base[v1alpha1.LabelEnvoyVersion] = envoy
	exceptions := map[string][]scope.Pod{}
	for _, pod := range excluded {
		exceptions[pod.Namespace] = append(exceptions[pod.Namespace], pod)
	}
	workloads := map[string]map[string][]metav1.PartialObjectMetadata{} // ns → workload → pods
	for _, pod := range configured {
		if workloads[pod.Namespace] == nil {
			workloads[pod.Namespace] = map[string][]metav1.PartialObjectMetadata{}
		}
		w := workloadName(pod.Name, pod.Labels)
		workloads[pod.Namespace][w] = append(workloads[pod.Namespace][w], pod)
	}
	nss := make([]string, 0, len(workloads))
	for ns := range workloads {
		nss = append(nss, ns)
	}
	sort.Strings(nss)
	for _, ns := range nss {
		if len(exceptions[ns]) == 0 {
			placements = append(placements, render.Placement{Namespace: ns, Selector: base})
			continue
		}
		names := make([]string, 0, len(workloads[ns]))
		for w := range workloads[ns] {
			names = append(names, w)
		}
		sort.Strings(names)
		for _, w := range names {
			sel := stableLabels(workloads[ns][w])
			maps.Copy(sel, base)
			if selectsAny(sel, exceptions[ns]) {
				unplaced = append(unplaced, ns+"/"+w)
				continue
			}
			placements = append(placements, render.Placement{Namespace: ns, Selector: sel})
		}
	}
	_ = root
	if placements == nil {
		// Pods are overridden but none is governed here: render.Place would
		// keep the unrestricted objects, which select the overridden pods
		// too (leanmesh twice on them). Nothing may be placed.
		placements = []render.Placement{}
	}
	return placements, unplaced
}

// volatileLabels change per rollout or per pod (as in lazyxds): a selector
// on them would miss the next ReplicaSet's pods.
var volatileLabels = map[string]bool{
	"pod-template-hash": true, "controller-revision-hash": true, "pod-template-generation": true,
	"statefulset.kubernetes.io/pod-name": true, "apps.kubernetes.io/pod-index": true,
}

// stableLabels are the labels every pod of the workload carries with the
// same value, minus the volatile ones.
func stableLabels(pods []metav1.PartialObjectMetadata) map[string]string {
	out := map[string]string{}
	for k, v := range pods[0].Labels {
		if !volatileLabels[k] {
			out[k] = v
		}
	}
	for _, p := range pods[1:] {
		for k, v := range out {
			if p.Labels[k] != v {
				delete(out, k)
			}
		}
	}
	return out
}

func selectsAny(sel map[string]string, pods []scope.Pod) bool {
	for _, p := range pods {
		match := true
		for k, v := range sel {
			if p.Labels[k] != v {
				match = false
				break
			}
		}
		if match {
			return true
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

var joinMax = validation.JoinMax
