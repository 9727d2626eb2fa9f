package lazyxds

import (
	"fmt"
	"slices"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/wellknown"

	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/filters/peer"
)

const (
	alsClusterName  = "leanmesh-als"
	alsLogName      = "leanmesh-lazy"
	egressRouteName = "leanmesh-lazy-default"
	unresolvedHost  = "leanmesh-lazy-unresolved.invalid"
	egressLuaName   = "leanmesh.lazy_authority"
)

// EgressObjects are the lazy egress gateway's objects, in apply order.
type EgressObjects struct {
	ServiceAccount *corev1.ServiceAccount
	Deployment     *appsv1.Deployment
	Service        *corev1.Service
	Gateway        *networkingv1.Gateway
	VirtualService *networkingv1.VirtualService
	EnvoyFilter    *networkingv1alpha3.EnvoyFilter
}

// Objects lists them for a generic apply loop.
func (o EgressObjects) Objects() []client.Object {
	return []client.Object{o.ServiceAccount, o.Deployment, o.Service, o.Gateway, o.VirtualService, o.EnvoyFilter}
}

// ServiceAccount is the identity the egress runs as: its Istio workload
// certificate (spiffe://<td>/ns/<Namespace>/sa/<this>) is what the
// controller's ALS port admits (als.MeshTLS), so it is the egress's own.
func (e Egress) ServiceAccount() (namespace, name string) {
	e = e.withDefaults()
	return e.Namespace, e.Name
}

// RenderEgress renders the lazy egress gateway. httpPorts (Graph.HTTPPorts)
// become Service ports all targeting the one listener: a lazy workload sees
// the egress, so istiod gives it an HTTP route configuration — and its
// catch-all, where the redirect lives — on every HTTP port of the mesh.
func RenderEgress(eg Egress, httpPorts []uint32) EgressObjects {
	eg = eg.withDefaults()
	labels := map[string]string{"app": eg.Name, "istio": eg.Name}
	meta := func(name string) metav1.ObjectMeta {
		l := managedLabels()
		for k, v := range labels {
			l[k] = v
		}
		return metav1.ObjectMeta{Name: name, Namespace: eg.Namespace, Labels: l}
	}
	ports := slices.Clone(httpPorts)
	if !slices.Contains(ports, eg.ServicePort) {
		ports = append(ports, eg.ServicePort)
	}
	slices.Sort(ports)
	ports = slices.Compact(ports)

	podLabels := meta("").Labels
	if eg.Revision != "" {
		podLabels["istio.io/rev"] = eg.Revision
	} else {
		podLabels["sidecar.istio.io/inject"] = "true"
	}
	dep := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: meta(eg.Name),
		Spec: appsv1.DeploymentSpec{
			Replicas: &eg.Replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels: podLabels,
					// Istio's "gateway" injection template turns this container into a
					// router-mode proxyv2 (args: proxy router --domain $(POD_NAMESPACE).svc.<domain>
					// --proxyLogLevel --proxyComponentLogLevel --log_output_level), with its
					// env, istio-token/istiod-ca volumes and SDS — as Istio's gateway chart does.
					Annotations: map[string]string{"inject.istio.io/templates": "gateway"},
				},
				Spec: corev1.PodSpec{
					ServiceAccountName: eg.Name,
					Containers: []corev1.Container{{
						Name:  "istio-proxy",
						Image: eg.Image,
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(eg.ListenPort), Protocol: corev1.ProtocolTCP}},
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU:    resource.MustParse("100m"),
							corev1.ResourceMemory: resource.MustParse("128Mi"),
						}},
					}},
				},
			},
		},
	}

	svc := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: meta(eg.Name),
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Selector: labels},
	}
	for _, p := range ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
			Name: fmt.Sprintf("http-%d", p), Port: int32(p), Protocol: corev1.ProtocolTCP,
			TargetPort: intstr.FromInt32(int32(eg.ListenPort)),
		})
	}

	gw := &networkingv1.Gateway{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.istio.io/v1", Kind: "Gateway"},
		ObjectMeta: meta(eg.Name),
		Spec: networkingapi.Gateway{
			Selector: map[string]string{"istio": eg.Name},
			Servers: []*networkingapi.Server{{
				Port:  &networkingapi.Port{Number: eg.ListenPort, Name: "http", Protocol: "HTTP"},
				Hosts: []string{"*"},
			}},
		},
	}

	// Hosts whose VirtualService is bound to this gateway match their own
	// virtual host first; everything else lands on "*" and is sent to the
	// cluster the Lua filter computed (see the EnvoyFilter's HTTP_ROUTE patch).
	vs := &networkingv1.VirtualService{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.istio.io/v1", Kind: "VirtualService"},
		ObjectMeta: meta(eg.Name + "-default"),
		Spec: networkingapi.VirtualService{
			Hosts:    []string{"*"},
			Gateways: []string{eg.Name},
			Http: []*networkingapi.HTTPRoute{{
				Name: egressRouteName,
				// Placeholder the EnvoyFilter replaces with cluster_header. If that
				// patch ever fails to apply, requests 503 instead of looping back.
				Route: []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: unresolvedHost}}},
			}},
		},
	}

	sa := &corev1.ServiceAccount{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}, ObjectMeta: meta(eg.Name)}
	return EgressObjects{ServiceAccount: sa, Deployment: dep, Service: svc, Gateway: gw, VirtualService: vs, EnvoyFilter: egressFilter(eg, labels, meta(eg.Name))}
}

func egressFilter(eg Egress, selector map[string]string, meta metav1.ObjectMeta) *networkingv1alpha3.EnvoyFilter {
	listener := &networkingapi.EnvoyFilter_EnvoyConfigObjectMatch_Listener{Listener: &networkingapi.EnvoyFilter_ListenerMatch{
		PortNumber: eg.ListenPort,
		FilterChain: &networkingapi.EnvoyFilter_ListenerMatch_FilterChainMatch{
			Filter: &networkingapi.EnvoyFilter_ListenerMatch_FilterMatch{Name: wellknown.HTTPConnectionManager},
		},
	}}
	routerListener := &networkingapi.EnvoyFilter_EnvoyConfigObjectMatch_Listener{Listener: &networkingapi.EnvoyFilter_ListenerMatch{
		PortNumber: eg.ListenPort,
		FilterChain: &networkingapi.EnvoyFilter_ListenerMatch_FilterChainMatch{
			Filter: &networkingapi.EnvoyFilter_ListenerMatch_FilterMatch{
				Name:      wellknown.HTTPConnectionManager,
				SubFilter: &networkingapi.EnvoyFilter_ListenerMatch_SubFilterMatch{Name: wellknown.Router},
			},
		},
	}}
	gateway := networkingapi.EnvoyFilter_GATEWAY
	patches := []*networkingapi.EnvoyFilter_EnvoyConfigObjectPatch{
		{
			// The controller's ALS endpoint, HTTP/2 for gRPC.
			ApplyTo: networkingapi.EnvoyFilter_CLUSTER,
			Match:   &networkingapi.EnvoyFilter_EnvoyConfigObjectMatch{Context: gateway},
			Patch: &networkingapi.EnvoyFilter_Patch{Operation: networkingapi.EnvoyFilter_Patch_ADD, Value: mustStruct(map[string]any{
				"name":            alsClusterName,
				"type":            "STRICT_DNS",
				"connect_timeout": "1s",
				"lb_policy":       "ROUND_ROBIN",
				"load_assignment": map[string]any{
					"cluster_name": alsClusterName,
					"endpoints": []any{map[string]any{"lb_endpoints": []any{map[string]any{"endpoint": map[string]any{
						"address": map[string]any{"socket_address": map[string]any{"address": eg.ALSHost, "port_value": eg.ALSPort}},
					}}}}},
				},
				// Mutual TLS with the egress's Istio workload certificate (the
				// SDS secret "default" istio-agent serves every proxy, as in
				// Istio's own clusters): the controller admits only this
				// identity (docs/security.md).
				"transport_socket": map[string]any{
					"name": "envoy.transport_sockets.tls",
					"typed_config": map[string]any{
						"@type":              "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
						"sni":                eg.ALSHost,
						"common_tls_context": alsTLSContext(eg.ALSServerIdentity),
					},
				},
				"typed_extension_protocol_options": map[string]any{
					"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": map[string]any{
						"@type":                "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
						"explicit_http_config": map[string]any{"http2_protocol_options": map[string]any{}},
					},
				},
			})},
		},
		{
			// access_log is repeated: MERGE appends ours to Istio's loggers.
			ApplyTo: networkingapi.EnvoyFilter_NETWORK_FILTER,
			Match:   &networkingapi.EnvoyFilter_EnvoyConfigObjectMatch{Context: gateway, ObjectTypes: listener},
			Patch: &networkingapi.EnvoyFilter_Patch{Operation: networkingapi.EnvoyFilter_Patch_MERGE, Value: mustStruct(map[string]any{
				"typed_config": map[string]any{
					"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
					"access_log": []any{map[string]any{
						"name": "envoy.access_loggers.http_grpc",
						"typed_config": map[string]any{
							"@type": "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
							"common_config": map[string]any{
								"log_name":              alsLogName,
								"transport_api_version": "V3",
								"grpc_service":          map[string]any{"envoy_grpc": map[string]any{"cluster_name": alsClusterName}},
								// Learning latency is bounded by this flush interval.
								"buffer_flush_interval": "0.2s",
							},
							"additional_request_headers_to_log": []any{peer.HeaderMetadataID},
						},
					}},
				},
			})},
		},
		{
			ApplyTo: networkingapi.EnvoyFilter_HTTP_FILTER,
			Match:   &networkingapi.EnvoyFilter_EnvoyConfigObjectMatch{Context: gateway, ObjectTypes: routerListener},
			Patch: &networkingapi.EnvoyFilter_Patch{Operation: networkingapi.EnvoyFilter_Patch_INSERT_BEFORE, Value: mustStruct(map[string]any{
				"name": egressLuaName,
				"typed_config": map[string]any{
					"@type":               "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
					"default_source_code": map[string]any{"inline_string": egressLua(eg.ClusterDomain)},
				},
			})},
		},
		{
			ApplyTo: networkingapi.EnvoyFilter_HTTP_ROUTE,
			Match: &networkingapi.EnvoyFilter_EnvoyConfigObjectMatch{Context: gateway, ObjectTypes: &networkingapi.EnvoyFilter_EnvoyConfigObjectMatch_RouteConfiguration{
				RouteConfiguration: &networkingapi.EnvoyFilter_RouteConfigurationMatch{
					PortNumber: eg.ListenPort,
					Vhost: &networkingapi.EnvoyFilter_RouteConfigurationMatch_VirtualHostMatch{
						Name:  fmt.Sprintf("*:%d", eg.ListenPort),
						Route: &networkingapi.EnvoyFilter_RouteConfigurationMatch_RouteMatch{Name: egressRouteName},
					},
				},
			}},
			// cluster_header replaces the placeholder cluster (same oneof).
			Patch: &networkingapi.EnvoyFilter_Patch{Operation: networkingapi.EnvoyFilter_Patch_MERGE, Value: mustStruct(map[string]any{
				"route": map[string]any{"cluster_header": HeaderLazyCluster},
			})},
		},
	}
	return &networkingv1alpha3.EnvoyFilter{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.istio.io/v1alpha3", Kind: "EnvoyFilter"},
		ObjectMeta: meta,
		Spec: networkingapi.EnvoyFilter{
			WorkloadSelector: &networkingapi.WorkloadSelector{Labels: selector},
			ConfigPatches:    patches,
		},
	}
}

// egressLua canonicalises the caller's authority before routing: short names
// resolve in the caller's namespace (sent by the redirect), the port is the
// one the caller connected to, and the cluster is named as istiod names it.
// The route cache is cleared so gateway virtual hosts match the FQDN.
func egressLua(domain string) string {
	return strings.NewReplacer("@DOMAIN@", domain, "@NS@", HeaderLazyNamespace, "@DST@", HeaderLazyDst, "@CLUSTER@", HeaderLazyCluster).Replace(`-- leanmesh lazy egress: authority -> FQDN and outbound cluster.
function envoy_on_request(h)
  local hdrs = h:headers()
  local dst = hdrs:get("@DST@")
  if dst == nil then return end
  local ns = hdrs:get("@NS@")
  hdrs:remove("@DST@")
  hdrs:remove("@NS@")
  local host, aport = string.match(hdrs:get(":authority") or "", "^([^:]+):?(%d*)$")
  if host == nil then return end
  host = string.lower(host)
  local port = string.match(dst, ":(%d+)$") or aport
  if port == "" then port = "80" end
  if ns ~= nil then
    local _, dots = string.gsub(host, "%.", "")
    if dots == 0 then
      host = host .. "." .. ns .. ".svc.@DOMAIN@"
    elseif dots == 1 then
      host = host .. ".svc.@DOMAIN@"
    elseif string.sub(host, -4) == ".svc" then
      host = host .. ".@DOMAIN@"
    end
  end
  if aport ~= "" then hdrs:replace(":authority", host .. ":" .. aport) else hdrs:replace(":authority", host) end
  hdrs:replace("@CLUSTER@", "outbound|" .. port .. "||" .. host)
  h:clearRouteCache()
end
`)
}

// istioSDS is an SDS secret istio-agent serves the proxy ("default": its
// workload certificate; "ROOTCA": the mesh root), configured as istiod
// configures them (pilot/pkg/model ConstructSdsSecretConfig).
func istioSDS(name string) map[string]any {
	return map[string]any{
		"name": name,
		"sds_config": map[string]any{
			"api_config_source": map[string]any{
				"api_type":                       "GRPC",
				"grpc_services":                  []any{map[string]any{"envoy_grpc": map[string]any{"cluster_name": "sds-grpc"}}},
				"set_node_on_first_message_only": true,
				"transport_api_version":          "V3",
			},
			"initial_fetch_timeout": "0s",
			"resource_api_version":  "V3",
		},
	}
}

// alsTLSContext is the egress's side of the ALS connection: it presents
// its workload certificate and, given the controller's SPIFFE ID, verifies
// the server exactly as istiod has a proxy verify an ISTIO_MUTUAL peer
// (pilot/pkg/security/model ApplyToCommonTLSContext: a combined validation
// context, the SAN as an exact match, the root from SDS ROOTCA), so only
// the controller's Istio certificate is accepted: not a self-signed one,
// not another workload's.
func alsTLSContext(serverIdentity string) map[string]any {
	ctx := map[string]any{
		"alpn_protocols":                     []any{"h2"},
		"tls_certificate_sds_secret_configs": []any{istioSDS("default")},
	}
	if serverIdentity != "" {
		ctx["combined_validation_context"] = map[string]any{
			"default_validation_context":           map[string]any{"match_subject_alt_names": []any{map[string]any{"exact": serverIdentity}}},
			"validation_context_sds_secret_config": istioSDS("ROOTCA"),
		}
	}
	return ctx
}
