package render

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"

	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// NodeMetadataNamespace is the node metadata key holding the proxy's
// namespace (pilot-agent's NAMESPACE).
const NodeMetadataNamespace = "NAMESPACE"

// Placement is where one copy of a policy's objects goes: a namespace and
// the complete pod selector of that copy.
//
// A policy overridden for some of its workloads by a more specific policy
// cannot keep one selector: an EnvoyFilter's workloadSelector only matches
// labels positively, so "these pods except those" is written as one copy
// per namespace without exceptions (the policy's selector, which also
// covers that namespace's future pods) and one copy per governed workload
// where there are exceptions (its stable labels).
type Placement struct {
	Namespace string
	Selector  map[string]string
}

// Place copies the rendered objects to each placement, renaming them with a
// short hash of the placement so copies never collide. EnvoyFilters stay in
// the policy's namespace; Telemetry copies go to the placement's (a
// Telemetry's selector only reaches its own namespace). Render without
// Input.MeshNamespaces: each placement gets its own Telemetry copy. No
// placements: the objects stay as Render made them.
func Place(objs []client.Object, placements []Placement) []client.Object {
	if len(placements) == 0 {
		return objs
	}
	var out []client.Object
	for _, pl := range placements {
		suffix := "-" + placementHash(pl)
		for _, o := range objs {
			switch t := o.(type) {
			case *networkingv1alpha3.EnvoyFilter:
				// The copy stays in the policy's namespace, so an owner
				// reference can remove it; a copy for another namespace
				// matches that namespace on the proxy's node metadata
				// (istiod's proxyMatch compares Metadata.Raw).
				c := t.DeepCopy()
				c.Name = t.Name + suffix
				if c.Spec.WorkloadSelector != nil {
					c.Spec.WorkloadSelector.Labels = maps.Clone(pl.Selector)
				}
				if pl.Namespace != t.Namespace {
					for _, cp := range c.Spec.ConfigPatches {
						if cp.Match == nil {
							continue
						}
						if cp.Match.Proxy == nil {
							cp.Match.Proxy = &networkingapi.EnvoyFilter_ProxyMatch{}
						}
						if cp.Match.Proxy.Metadata == nil {
							cp.Match.Proxy.Metadata = map[string]string{}
						}
						cp.Match.Proxy.Metadata[NodeMetadataNamespace] = pl.Namespace
					}
				}
				out = append(out, c)
			case *telemetryv1.Telemetry:
				c := t.DeepCopy()
				c.Namespace, c.Name = pl.Namespace, t.Name+suffix
				if c.Spec.Selector != nil {
					c.Spec.Selector.MatchLabels = maps.Clone(pl.Selector)
				}
				out = append(out, c)
			default:
				out = append(out, o)
			}
		}
	}
	slices.SortStableFunc(out, func(a, b client.Object) int {
		ka, kb := objectKey(a), objectKey(b)
		switch {
		case ka < kb:
			return -1
		case ka > kb:
			return 1
		}
		return 0
	})
	return out
}

func placementHash(pl Placement) string {
	h := sha256.New()
	h.Write([]byte(pl.Namespace))
	for _, k := range slices.Sorted(maps.Keys(pl.Selector)) {
		h.Write([]byte{0})
		h.Write([]byte(k + "=" + pl.Selector[k]))
	}
	return hex.EncodeToString(h.Sum(nil))[:8]
}
