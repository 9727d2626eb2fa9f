package install

import (
	"context"
	"fmt"
	"sort"
	"time"

	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/render"
)

// Handovers are break-before-make. When a pod moves from one policy to
// another (a narrower policy appears or goes, a placement changes), the two
// policies reconcile separately; applying the new owner's EnvoyFilters while
// the old owner's still select the pod gives its listeners leanmesh twice
// (every request counted twice) for as long as both exist. Seen on the real
// istiod in TestScopePrecedenceOnIstiod before this check. So a policy
// first deletes its own stale objects and applies only once no other
// policy's leanmesh EnvoyFilter selects a pod it configures. In the gap the
// pod has no leanmesh EnvoyFilter, and since the patches that remove Istio's
// stats live in those same EnvoyFilters, it runs Istio's own telemetry: a
// short switch of reporter, never a blackout or a double count.

// handoverWait is how long a policy waits before looking again (the other
// policy's deletions requeue only that policy).
const handoverWait = 500 * time.Millisecond

// blockers lists other policies' leanmesh EnvoyFilters that select one of
// pods, as "ns/name (policy ns/name)".
func (r *Reconciler) blockers(ctx context.Context, p *v1alpha1.TelemetryPolicy, pods []metav1.PartialObjectMetadata) ([]string, error) {
	if len(pods) == 0 {
		return nil, nil
	}
	nss := map[string]bool{r.RootNamespace: true}
	for _, pod := range pods {
		nss[pod.Namespace] = true
	}
	seen := map[string]bool{}
	var out []string
	for ns := range nss {
		var efs networkingv1alpha3.EnvoyFilterList
		if err := r.Client.List(ctx, &efs, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelManagedBy: v1alpha1.ManagedBy}); err != nil {
			return nil, err
		}
		for _, ef := range efs.Items {
			if ownedBy(ef.Labels, p) {
				continue
			}
			var sel map[string]string
			if ef.Spec.WorkloadSelector != nil {
				sel = ef.Spec.WorkloadSelector.Labels
			}
			for _, pod := range pods {
				if ef.Namespace != r.RootNamespace && ef.Namespace != pod.Namespace {
					continue
				}
				if !labelsMatch(sel, pod.Labels) || !patchesReach(ef, pod.Namespace) {
					continue
				}
				k := fmt.Sprintf("EnvoyFilter %s/%s (policy %s/%s) selects pod %s/%s", ef.Namespace, ef.Name,
					ef.Labels[v1alpha1.LabelPolicyNamespace], ef.Labels[v1alpha1.LabelPolicy], pod.Namespace, pod.Name)
				if !seen[ef.Namespace+"/"+ef.Name] {
					seen[ef.Namespace+"/"+ef.Name] = true
					out = append(out, k)
				}
				break
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// patchesReach: a placement copy for another namespace matches that
// namespace on the proxy's node metadata (render.Place); the EnvoyFilter
// reaches ns if any patch has no such match or matches ns.
func patchesReach(ef *networkingv1alpha3.EnvoyFilter, ns string) bool {
	for _, cp := range ef.Spec.ConfigPatches {
		want, ok := cp.GetMatch().GetProxy().GetMetadata()[render.NodeMetadataNamespace]
		if !ok || want == ns {
			return true
		}
	}
	return false
}

func labelsMatch(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}
