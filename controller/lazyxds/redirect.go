package lazyxds

import (
	"fmt"
	"regexp"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Headers between a lazy caller's redirect and the egress's Lua filter.
const (
	HeaderLazyNamespace = "x-leanmesh-lazy-ns"      // caller namespace: resolves short names
	HeaderLazyDst       = "x-leanmesh-lazy-dst"     // original destination ip:port
	HeaderLazyCluster   = "x-leanmesh-lazy-cluster" // set at the egress: outbound|port||fqdn
	redirectRouteName   = "leanmesh-lazy-redirect"
)

// Egress describes the lazy egress gateway and the controller's ALS endpoint.
// Zero values get defaults (see withDefaults).
type Egress struct {
	Namespace     string // default "istio-system"
	Name          string // default DefaultEgressName
	ClusterDomain string // default "cluster.local"
	// ServicePort is the egress Service port the redirect targets (default 80);
	// ListenPort is the Gateway/container port behind it (default 8080).
	ServicePort uint32
	ListenPort  uint32
	Replicas    int32  // default 2: first calls of every lazy workload go through it
	Image       string // default "auto": Istio's gateway injection fills in proxyv2
	// ALSHost/ALSPort address the controller's AccessLogService.
	ALSHost string // default "leanmesh-controller.leanmesh-system.svc.<domain>"
	ALSPort uint32 // default 9977
	// ALSServerIdentity is the controller's SPIFFE ID: when set, the egress
	// verifies the ALS server as Istio verifies a mesh peer (chain to the
	// mesh root from SDS ROOTCA, this SAN); empty, it does not verify it.
	ALSServerIdentity string
	// Revision is the istiod revision that injects the egress pods (label
	// istio.io/rev); empty: the default injector (sidecar.istio.io/inject).
	Revision string
}

func (e Egress) withDefaults() Egress {
	if e.Namespace == "" {
		e.Namespace = "istio-system"
	}
	if e.Name == "" {
		e.Name = DefaultEgressName
	}
	if e.ClusterDomain == "" {
		e.ClusterDomain = "cluster.local"
	}
	if e.ServicePort == 0 {
		e.ServicePort = 80
	}
	if e.ListenPort == 0 {
		e.ListenPort = 8080
	}
	if e.Replicas == 0 {
		e.Replicas = 2
	}
	if e.Image == "" {
		e.Image = "auto"
	}
	if e.ALSHost == "" {
		e.ALSHost = "leanmesh-controller.leanmesh-system.svc." + e.ClusterDomain
	}
	if e.ALSPort == 0 {
		e.ALSPort = 9977
	}
	return e
}

// FQDN is the egress Service host.
func (e Egress) FQDN() string {
	e = e.withDefaults()
	return e.Name + "." + e.Namespace + ".svc." + e.ClusterDomain
}

// SidecarHost is the egress as a Sidecar egress host ("<ns>/<fqdn>").
func (e Egress) SidecarHost() string { return e.withDefaults().Namespace + "/" + e.FQDN() }

// RedirectInput is one lazy policy.
type RedirectInput struct {
	Namespace string // the policy's (and its callers') namespace
	Policy    string
	// Selector is the policy's workload selector; empty means every workload
	// of Namespace (the EnvoyFilter then has no selector either).
	Selector map[string]string
	// Namespaces: "<name>.<namespace>" authorities are mesh names only for
	// these (Graph.Namespaces); "example.com" must keep its passthrough.
	Namespaces []string
	// ServiceEntryHosts are the lazy ServiceEntry hosts (Graph.ServiceEntryHosts).
	ServiceEntryHosts []string
}

// MeshAuthorityRegex matches authorities a pod resolves inside the mesh:
// "name", "name.<known ns>", "*.svc", "*.svc.<domain>", each with an optional port.
func MeshAuthorityRegex(domain string, namespaces []string) string {
	label := `[a-z0-9]([-a-z0-9_]*[a-z0-9])?`
	alts := []string{label, `[-a-z0-9_.]+\.svc`, `[-a-z0-9_.]+\.svc\.` + regexp.QuoteMeta(domain)}
	if len(namespaces) > 0 {
		q := make([]string, len(namespaces))
		for i, ns := range namespaces {
			q[i] = regexp.QuoteMeta(ns)
		}
		alts = append(alts, label+`\.(`+strings.Join(q, "|")+`)`)
	}
	return `(?i)^(` + strings.Join(alts, "|") + `)(:[0-9]+)?$`
}

// HostsRegex matches exact ServiceEntry hosts ("*.example.com" as a suffix).
func HostsRegex(hosts []string) string {
	q := make([]string, len(hosts))
	for i, h := range hosts {
		if rest, ok := strings.CutPrefix(h, "*."); ok {
			q[i] = `[-a-z0-9_.]+\.` + regexp.QuoteMeta(rest)
		} else {
			q[i] = regexp.QuoteMeta(h)
		}
	}
	return `(?i)^(` + strings.Join(q, "|") + `)(:[0-9]+)?$`
}

// RenderRedirect renders the one EnvoyFilter of a lazy policy. It inserts a
// route at the head of the catch-all virtual host (allow_any, or block_all
// under REGISTRY_ONLY) of every outbound HTTP route configuration: mesh
// authorities that matched no visible service go to the lazy egress with the
// authority untouched; everything else falls through to the original
// PassthroughCluster/502 route. Its size depends on the namespaces and
// ServiceEntry hosts, never on the number of Kubernetes services.
func RenderRedirect(in RedirectInput, eg Egress) (*networkingv1alpha3.EnvoyFilter, error) {
	eg = eg.withDefaults()
	if in.Namespace == "" || in.Policy == "" {
		return nil, fmt.Errorf("lazyxds: redirect needs a namespace and a policy name")
	}
	cluster := fmt.Sprintf("outbound|%d||%s", eg.ServicePort, eg.FQDN())
	route := func(name, regex string, withNS bool) map[string]any {
		hdrs := []any{header(HeaderLazyDst, "%DOWNSTREAM_LOCAL_ADDRESS%")}
		if withNS {
			hdrs = append(hdrs, header(HeaderLazyNamespace, in.Namespace))
		}
		return map[string]any{
			"name": name,
			"match": map[string]any{
				"prefix": "/",
				"headers": []any{map[string]any{
					"name":         ":authority",
					"string_match": map[string]any{"safe_regex": map[string]any{"regex": regex}},
				}},
			},
			// Same timeouts as istiod's passthrough route: the egress applies the real ones.
			"route":                  map[string]any{"cluster": cluster, "timeout": "0s"},
			"request_headers_to_add": hdrs,
		}
	}
	routes := []map[string]any{route(redirectRouteName, MeshAuthorityRegex(eg.ClusterDomain, in.Namespaces), true)}
	if len(in.ServiceEntryHosts) > 0 {
		routes = append(routes, route(redirectRouteName+"-se", HostsRegex(in.ServiceEntryHosts), false))
	}
	ef := &networkingv1alpha3.EnvoyFilter{
		TypeMeta: metav1.TypeMeta{APIVersion: "networking.istio.io/v1alpha3", Kind: "EnvoyFilter"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      SidecarNamePrefix + in.Policy,
			Namespace: in.Namespace,
			Labels:    managedLabels(),
		},
	}
	if len(in.Selector) > 0 {
		ef.Spec.WorkloadSelector = &networkingapi.WorkloadSelector{Labels: in.Selector}
	}
	for _, vhost := range []string{"allow_any", "block_all"} {
		// INSERT_FIRST in reverse order keeps the mesh route first.
		for i := len(routes) - 1; i >= 0; i-- {
			ef.Spec.ConfigPatches = append(ef.Spec.ConfigPatches, &networkingapi.EnvoyFilter_EnvoyConfigObjectPatch{
				ApplyTo: networkingapi.EnvoyFilter_HTTP_ROUTE,
				Match: &networkingapi.EnvoyFilter_EnvoyConfigObjectMatch{
					Context: networkingapi.EnvoyFilter_SIDECAR_OUTBOUND,
					ObjectTypes: &networkingapi.EnvoyFilter_EnvoyConfigObjectMatch_RouteConfiguration{
						RouteConfiguration: &networkingapi.EnvoyFilter_RouteConfigurationMatch{
							Vhost: &networkingapi.EnvoyFilter_RouteConfigurationMatch_VirtualHostMatch{Name: vhost},
						},
					},
				},
				Patch: &networkingapi.EnvoyFilter_Patch{Operation: networkingapi.EnvoyFilter_Patch_INSERT_FIRST, Value: mustStruct(routes[i])},
			})
		}
	}
	return ef, nil
}

func header(k, v string) map[string]any {
	return map[string]any{"header": map[string]any{"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
}

// mustStruct converts rendered literals; they are built in this package, so
// a failure is a programming error.
func mustStruct(m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		panic(err)
	}
	return s
}
