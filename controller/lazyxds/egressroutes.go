package lazyxds

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	networkingapi "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
)

// Egress-bound copies of the user's VirtualServices. A first call to a hidden
// service reaches the lazy egress instead of the caller's own routes; for it
// to get the same weights, subsets, header matches, retries and timeouts, the
// egress must have the VirtualService too. Instead of asking users to add the
// egress to every VirtualService's gateways and exportTo, the controller
// renders a copy bound to the egress gateway(s), exported to their
// namespaces only, in the user's namespace (short host names resolve exactly
// as in the original) and owned by the original (deleted with it). The
// user's object is never modified.

// EgressVSPrefix prefixes the copies' names.
const EgressVSPrefix = "leanmesh-lazy-vs-"

// EgressRoutesInput is what RenderEgressRoutes needs for one VirtualService.
type EgressRoutesInput struct {
	VirtualService *networkingv1.VirtualService
	// Egresses are the lazy egress gateways in use (one copy binds to all).
	Egresses []Egress
	// LazyPorts returns the ports of a lazy service by FQDN (ok false: not a
	// lazy service, so its calls never reach the egress).
	LazyPorts     func(fqdn string) (ports []uint32, ok bool)
	ClusterDomain string
}

// RenderEgressRoutes returns the egress-bound copy of a VirtualService (nil
// when it routes no lazy host, does not apply to sidecars, or is already
// bound to every egress) and the rules a first call through the egress cannot
// follow, as "<ns>/<name>: <why>". Those rules are left out of the copy
// (sourceLabels, sourceNamespace, multi-port port matches): at the egress the
// source is the egress itself, and every port arrives on one listener.
func RenderEgressRoutes(in EgressRoutesInput) (*networkingv1.VirtualService, []string) {
	vs := in.VirtualService
	if vs == nil || vs.Labels[v1alpha1.LabelManagedBy] == v1alpha1.ManagedBy || len(in.Egresses) == 0 {
		return nil, nil
	}
	spec := &vs.Spec
	if len(spec.Gateways) > 0 && !slices.Contains(spec.Gateways, "mesh") {
		return nil, nil // gateway-only: never applied to a sidecar's call
	}
	domain := in.ClusterDomain
	if domain == "" {
		domain = "cluster.local"
	}
	var hosts []string
	var ports [][]uint32
	for _, h := range spec.Hosts {
		if p, ok := in.LazyPorts(strings.ToLower(ResolveShortName(h, vs.Namespace, domain))); ok {
			hosts = append(hosts, h)
			ports = append(ports, p)
		}
	}
	if len(hosts) == 0 {
		return nil, nil
	}
	var gateways, exportTo []string
	for _, eg := range in.Egresses {
		eg = eg.withDefaults()
		gateways = append(gateways, eg.Namespace+"/"+eg.Name)
		exportTo = append(exportTo, eg.Namespace)
	}
	slices.Sort(gateways)
	gateways = slices.Compact(gateways)
	slices.Sort(exportTo)
	exportTo = slices.Compact(exportTo)
	if bound(spec.Gateways, vs.Namespace, gateways) && exported(spec.ExportTo, vs.Namespace, exportTo) {
		return nil, nil // the user bound it already (the old documented way)
	}

	name := vs.Namespace + "/" + vs.Name
	var problems []string
	var routes []*networkingapi.HTTPRoute
	for i, r := range spec.Http {
		rn := r.Name
		if rn == "" {
			rn = fmt.Sprintf("#%d", i)
		}
		r = proto.Clone(r).(*networkingapi.HTTPRoute)
		if len(r.Match) == 0 {
			routes = append(routes, r)
			continue
		}
		var kept []*networkingapi.HTTPMatchRequest
		for j, m := range r.Match {
			what := fmt.Sprintf("%s: http route %s match %d", name, rn, j)
			if len(m.Gateways) > 0 {
				if !slices.Contains(m.Gateways, "mesh") {
					continue // applies to gateways only, not to a sidecar's call
				}
				m.Gateways = nil // inherit the copy's gateways
			}
			if len(m.SourceLabels) > 0 || m.SourceNamespace != "" {
				problems = append(problems, what+" selects callers (sourceLabels/sourceNamespace); at the egress the caller is the egress")
				continue
			}
			if m.Port != 0 {
				switch portMatch(m.Port, ports) {
				case portAlways:
					m.Port = 0 // every lazy host has only this port
				case portNever:
					continue
				default:
					problems = append(problems, fmt.Sprintf("%s matches port %d of a multi-port service; the egress receives every port on one listener", what, m.Port))
					continue
				}
			}
			kept = append(kept, m)
		}
		if len(kept) == 0 {
			continue // no match of this route can apply at the egress
		}
		r.Match = kept
		routes = append(routes, r)
	}
	if len(routes) == 0 {
		return nil, problems
	}
	out := &networkingv1.VirtualService{
		TypeMeta: metav1.TypeMeta{APIVersion: "networking.istio.io/v1", Kind: "VirtualService"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      EgressVSName(vs.Name),
			Namespace: vs.Namespace,
			Labels:    managedLabels(),
			Annotations: map[string]string{
				"leanmesh.io/copy-of": vs.Name,
			},
			// Garbage-collected with the original, even while the controller is down.
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "networking.istio.io/v1", Kind: "VirtualService", Name: vs.Name, UID: vs.UID,
			}},
		},
		Spec: networkingapi.VirtualService{
			Hosts:    hosts,
			Gateways: gateways,
			ExportTo: exportTo,
			Http:     routes,
		},
	}
	return out, problems
}

// EgressVSName names the copy of VirtualService name (DNS subdomain, ≤ 253).
func EgressVSName(name string) string {
	n := EgressVSPrefix + name
	if len(n) <= 253 {
		return n
	}
	sum := sha256.Sum256([]byte(name))
	return n[:253-17] + "-" + hex.EncodeToString(sum[:8])
}

type portVerdict int

const (
	portAlways portVerdict = iota // every lazy host has exactly this one port
	portNever                     // no lazy host has it
	portSome
)

func portMatch(p uint32, hostPorts [][]uint32) portVerdict {
	always, never := true, true
	for _, ps := range hostPorts {
		if slices.Contains(ps, p) {
			never = false
		}
		if len(ps) != 1 || ps[0] != p {
			always = false
		}
	}
	switch {
	case always:
		return portAlways
	case never:
		return portNever
	}
	return portSome
}

// bound: every egress gateway is among gws (written "<ns>/<name>", or
// "<name>" for the VirtualService's own namespace).
func bound(gws []string, ns string, egresses []string) bool {
	for _, eg := range egresses {
		egNS, egName, _ := strings.Cut(eg, "/")
		listed := slices.Contains(gws, eg) || egNS == ns && slices.Contains(gws, egName)
		if !listed {
			return false
		}
	}
	return true
}

// exported: exportTo makes the VirtualService visible in every namespace.
func exported(exportTo []string, ns string, namespaces []string) bool {
	if len(exportTo) == 0 || slices.Contains(exportTo, "*") {
		return true
	}
	for _, n := range namespaces {
		visible := slices.Contains(exportTo, n) || n == ns && slices.Contains(exportTo, ".")
		if !visible {
			return false
		}
	}
	return true
}
