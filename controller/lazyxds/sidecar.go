package lazyxds

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	networkingapi "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
)

const (
	// DefaultEgressName names the lazy egress Deployment, Service and Gateway.
	DefaultEgressName = "leanmesh-lazy-egress"
	// SidecarNamePrefix prefixes each workload's Sidecar name.
	SidecarNamePrefix = "leanmesh-lazy-"
)

// volatileLabels change per rollout or per pod; selecting on them would miss
// the next ReplicaSet's pods or pick one pod only.
var volatileLabels = map[string]bool{
	"pod-template-hash":                  true,
	"controller-revision-hash":           true,
	"pod-template-generation":            true,
	"statefulset.kubernetes.io/pod-name": true,
	"apps.kubernetes.io/pod-index":       true,
	"batch.kubernetes.io/job-name":       false, // stable across a Job's pods: kept
}

// SelectorError explains why a workload gets no Sidecar: an empty selector
// would apply to the whole namespace (aeraki#83) and an overlapping one would
// also scope another workload.
type SelectorError struct {
	Workload WorkloadKey
	Reason   string
}

func (e *SelectorError) Error() string {
	return fmt.Sprintf("lazyxds: no Sidecar for %s: %s", e.Workload, e.Reason)
}

// SelectorFor returns the labels the workload's Sidecar selects on: its stable
// labels, refused when empty or when they also match a peer workload.
func SelectorFor(in SidecarInput) (map[string]string, error) {
	sel := map[string]string{}
	for k, v := range in.Workload.Labels {
		if !volatileLabels[k] {
			sel[k] = v
		}
	}
	key := in.Workload.Key()
	if len(sel) == 0 {
		return nil, &SelectorError{key, "workload has no stable labels; an empty selector would apply to the whole namespace"}
	}
	for _, p := range in.Peers {
		if p.Name == key.Name {
			continue
		}
		if matches(sel, p.Labels) {
			return nil, &SelectorError{key, fmt.Sprintf("labels %s also select workload %s", formatLabels(sel), p.Name)}
		}
	}
	return sel, nil
}

func matches(sel, labels map[string]string) bool {
	for k, v := range sel {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

func formatLabels(m map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + m[k])
	}
	return b.String()
}

func managedLabels() map[string]string {
	return map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedBy}
}

// RenderSidecar renders a lazy workload's networking.istio.io/v1 Sidecar. The
// error is a *SelectorError when the workload cannot be selected safely; the
// reconciler reports it and writes nothing.
func RenderSidecar(in SidecarInput) (*networkingv1.Sidecar, error) {
	sel, err := SelectorFor(in)
	if err != nil {
		return nil, err
	}
	return &networkingv1.Sidecar{
		TypeMeta: metav1.TypeMeta{APIVersion: "networking.istio.io/v1", Kind: "Sidecar"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      SidecarNamePrefix + in.Workload.Name,
			Namespace: in.Workload.Namespace,
			Labels:    managedLabels(),
		},
		Spec: networkingapi.Sidecar{
			WorkloadSelector: &networkingapi.WorkloadSelector{Labels: sel},
			Egress:           []*networkingapi.IstioEgressListener{{Hosts: slices.Clone(in.Hosts)}},
		},
	}, nil
}
