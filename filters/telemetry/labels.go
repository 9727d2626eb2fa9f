package telemetry

// Label is one of Istio's standard label names, numbered in Istio's order for
// HTTP metrics.
type Label uint8

const (
	LReporter Label = iota
	LSourceWorkload
	LSourceCanonicalService
	LSourceCanonicalRevision
	LSourceWorkloadNamespace
	LSourcePrincipal
	LSourceApp
	LSourceVersion
	LSourceCluster
	LDestinationWorkload
	LDestinationWorkloadNamespace
	LDestinationPrincipal
	LDestinationApp
	LDestinationVersion
	LDestinationService
	LDestinationCanonicalService
	LDestinationCanonicalRevision
	LDestinationServiceName
	LDestinationServiceNamespace
	LDestinationCluster
	LRequestProtocol
	LResponseCode
	LGRPCResponseStatus
	LResponseFlags
	LConnectionSecurityPolicy
	NumLabels
)

var labelNames = [NumLabels]string{
	"reporter", "source_workload", "source_canonical_service", "source_canonical_revision",
	"source_workload_namespace", "source_principal", "source_app", "source_version", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
	"destination_version", "destination_service", "destination_canonical_service",
	"destination_canonical_revision", "destination_service_name", "destination_service_namespace",
	"destination_cluster", "request_protocol", "response_code", "grpc_response_status", "response_flags",
	"connection_security_policy",
}

func (l Label) String() string { return labelNames[l] }

// LabelByName finds a standard label.
func LabelByName(name string) (Label, bool) {
	for i, n := range labelNames {
		if n == name {
			return Label(i), true
		}
	}
	return 0, false
}

func labelRange(from, to Label) []Label {
	var out []Label
	for l := from; l <= to; l++ {
		out = append(out, l)
	}
	return out
}

// HTTPLabels are the 25 labels of the HTTP request metrics, in Istio's order.
var HTTPLabels = labelRange(LReporter, LConnectionSecurityPolicy)

// PeerLabels are reporter plus the 19 source/destination labels: the label set
// of the gRPC message counters.
var PeerLabels = labelRange(LReporter, LDestinationCluster)

// TCPLabels are the 23 labels of the TCP metrics: PeerLabels plus protocol,
// response flags and security policy (no response code, no gRPC status).
var TCPLabels = append(labelRange(LReporter, LRequestProtocol), LResponseFlags, LConnectionSecurityPolicy)

// Reporter is the side a proxy reports from.
type Reporter uint8

const (
	// ReporterSource: a client sidecar's outbound listeners, and gateways.
	ReporterSource Reporter = iota
	// ReporterDestination: a server sidecar's inbound listener.
	ReporterDestination
)

func (r Reporter) String() string {
	if r == ReporterDestination {
		return "destination"
	}
	return "source"
}

// Protocol is request_protocol.
type Protocol uint8

const (
	ProtocolHTTP Protocol = iota
	ProtocolGRPC
	ProtocolTCP
)

func (p Protocol) String() string {
	switch p {
	case ProtocolGRPC:
		return "grpc"
	case ProtocolTCP:
		return "tcp"
	}
	return "http"
}

// Peer is the label-ready identity of a workload (the local proxy or a peer).
// Peers are interned (Registry.InternPeer), so a Key compares them by pointer.
type Peer struct {
	Workload          string
	Namespace         string
	CanonicalService  string
	CanonicalRevision string
	App               string
	Version           string
	Cluster           string
	// Identity is the peer's IDENTITY from metadata exchange (Istio 1.29+, a
	// SPIFFE URI). The client side falls back to it for
	// destination_principal when the upstream presented no certificate, as
	// istio_stats.cc does (peer_san = endpoint_peer->identity_). Empty for
	// peers from endpoint metadata (it carries no identity) and when the
	// filter runs with strict principals.
	Identity string
}

// Service is the destination service resolved from the upstream cluster's
// metadata (filter_metadata.istio.services[0]) or from a special cluster.
type Service struct {
	Host      string // destination_service
	Name      string // destination_service_name
	Namespace string // destination_service_namespace (client side), "" if unknown
}

// Special clusters whose name is the destination_service_name.
var specialClusters = map[string]bool{
	"BlackHoleCluster": true, "PassthroughCluster": true, "InboundPassthroughCluster": true,
	"InboundPassthroughClusterIpv4": true, "InboundPassthroughClusterIpv6": true,
}

// ResolveService applies Istio's destination_service rules
// (istio_stats.cc populatePeerInfo, lines 992–1041 in Envoy v1.39): start
// from the Host header unless the fallback is disabled; the route names
// block_all and allow_any and the special clusters name the service;
// otherwise the cluster metadata's services[0] gives the host, the namespace
// and the name, the name defaulting to the host's first DNS label. meta is
// nil when the cluster has no services entry.
func ResolveService(hostHeader string, disableHostFallback bool, routeName, clusterName string, meta *Service) Service {
	var s Service
	if !disableHostFallback {
		s.Host, s.Name = hostHeader, hostHeader
	}
	switch {
	case routeName == "block_all":
		s.Name = "BlackHoleCluster"
	case routeName == "allow_any":
		s.Name = "PassthroughCluster"
	case specialClusters[clusterName]:
		s.Name = clusterName
	case meta != nil:
		if meta.Host != "" {
			s.Host = meta.Host
		}
		s.Namespace = meta.Namespace
		if meta.Name != "" {
			s.Name = meta.Name
		} else {
			s.Name = firstLabel(s.Host)
		}
	}
	return s
}

func firstLabel(host string) string {
	for i := 0; i < len(host); i++ {
		if host[i] == '.' {
			return host[:i]
		}
	}
	return host
}

// NamespaceFromPrincipal returns the namespace in a SPIFFE-style principal
// "<td>/ns/<ns>/sa/<sa>" (with or without the spiffe:// scheme), as Istio's
// stats filter does: it wins over the peer's claimed namespace.
func NamespaceFromPrincipal(p string) string {
	const key = "/ns/"
	for i := 0; i+len(key) <= len(p); i++ {
		if p[i:i+len(key)] == key {
			rest := p[i+len(key):]
			for j := 0; j < len(rest); j++ {
				if rest[j] == '/' {
					return rest[:j]
				}
			}
			return rest
		}
	}
	return ""
}

const (
	unknown = "unknown"
	latest  = "latest"
)

func orUnknown(s string) string {
	if s == "" {
		return unknown
	}
	return s
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
