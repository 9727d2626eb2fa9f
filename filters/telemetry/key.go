package telemetry

import "strconv"

// Key holds the inputs of Istio's label rules for one request or connection.
// It is comparable and built from interned pointers and strings the filter
// already holds, so resolving it to a series is one map lookup that does not
// allocate. Label values are derived from it (Values) only when a series is
// created.
type Key struct {
	Reporter Reporter
	Local    *Peer // the proxy's own identity (never nil in practice)
	Peer     *Peer // nil when nothing is known about the peer
	Service  Service
	// PeerPrincipal and LocalPrincipal are the first URI SANs of the peer's and
	// the local certificate on the connection. On the client side only, an
	// empty PeerPrincipal falls back to Peer.Identity (see Values).
	PeerPrincipal  string
	LocalPrincipal string
	// TLSUnknown: the filter cannot see the connection's TLS state (the Go
	// network API exposes none), so connection_security_policy is "unknown"
	// rather than a guessed "none".
	TLSUnknown    bool
	Protocol      Protocol
	ResponseCode  uint16
	GRPCStatus    string // "" unless gRPC with a status
	ResponseFlags string // Envoy short form, "-" when none
	// Extra holds custom dimension values (config overrides) joined by '\x00',
	// in the order of Overrides.Expressions.
	Extra string
}

// Values applies Istio's label value rules (istio/proxy istio_stats.cc,
// populatePeerInfo and log) to k, returning the 25 standard values.
func (k *Key) Values() [NumLabels]string {
	var v [NumLabels]string
	local := k.Local
	if local == nil {
		local = &Peer{}
	}
	peer := k.Peer
	hasPeer := peer != nil
	if !hasPeer {
		peer = &Peer{}
	}
	// istio_stats.cc:1045-1093: the server side's peer principal is the
	// downstream certificate's only; the client side's is the upstream
	// certificate's, else the exchanged peer's IDENTITY.
	peerPrincipal := k.PeerPrincipal
	if peerPrincipal == "" && k.Reporter == ReporterSource {
		peerPrincipal = peer.Identity
	}
	// istio_stats.cc:1097-1106: the principal's namespace wins over the
	// peer's claim.
	peerNS := NamespaceFromPrincipal(peerPrincipal)
	if peerNS == "" {
		peerNS = peer.Namespace
	}
	v[LReporter] = k.Reporter.String()
	switch k.Reporter {
	case ReporterDestination:
		v[LSourceWorkload] = orUnknown(peer.Workload)
		v[LSourceCanonicalService] = orUnknown(peer.CanonicalService)
		v[LSourceCanonicalRevision] = or(peer.CanonicalRevision, latest)
		v[LSourceWorkloadNamespace] = orUnknown(peerNS)
		v[LSourcePrincipal] = orUnknown(peerPrincipal)
		v[LSourceApp] = orUnknown(peer.App)
		v[LSourceVersion] = orUnknown(peer.Version)
		v[LSourceCluster] = orUnknown(peer.Cluster)
		// The local side has no defaults: the injector supplies its labels.
		v[LDestinationWorkload] = local.Workload
		v[LDestinationWorkloadNamespace] = local.Namespace
		v[LDestinationPrincipal] = orUnknown(k.LocalPrincipal)
		v[LDestinationApp] = local.App
		v[LDestinationVersion] = local.Version
		v[LDestinationService] = or(k.Service.Host, local.CanonicalService)
		v[LDestinationCanonicalService] = local.CanonicalService
		v[LDestinationCanonicalRevision] = local.CanonicalRevision
		v[LDestinationServiceName] = or(k.Service.Name, local.CanonicalService)
		v[LDestinationServiceNamespace] = local.Namespace
		v[LDestinationCluster] = local.Cluster
		if k.TLSUnknown {
			v[LConnectionSecurityPolicy] = unknown
		} else if k.PeerPrincipal != "" && k.LocalPrincipal != "" {
			v[LConnectionSecurityPolicy] = "mutual_tls"
		} else {
			v[LConnectionSecurityPolicy] = "none"
		}
	default:
		v[LSourceWorkload] = local.Workload
		v[LSourceCanonicalService] = local.CanonicalService
		v[LSourceCanonicalRevision] = local.CanonicalRevision
		v[LSourceWorkloadNamespace] = local.Namespace
		v[LSourcePrincipal] = orUnknown(k.LocalPrincipal)
		v[LSourceApp] = local.App
		v[LSourceVersion] = local.Version
		v[LSourceCluster] = local.Cluster
		v[LDestinationWorkload] = orUnknown(peer.Workload)
		v[LDestinationWorkloadNamespace] = orUnknown(peerNS)
		v[LDestinationPrincipal] = orUnknown(peerPrincipal)
		v[LDestinationApp] = orUnknown(peer.App)
		v[LDestinationVersion] = orUnknown(peer.Version)
		v[LDestinationService] = orUnknown(k.Service.Host)
		v[LDestinationCanonicalService] = orUnknown(peer.CanonicalService)
		v[LDestinationCanonicalRevision] = or(peer.CanonicalRevision, latest)
		v[LDestinationServiceName] = orUnknown(k.Service.Name)
		// istio_stats.cc:1241-1244: cluster metadata first, then the peer.
		v[LDestinationServiceNamespace] = orUnknown(or(k.Service.Namespace, peerNS))
		v[LDestinationCluster] = orUnknown(peer.Cluster)
		// A client cannot know how the server authenticated it.
		v[LConnectionSecurityPolicy] = unknown
	}
	v[LRequestProtocol] = k.Protocol.String()
	v[LResponseCode] = strconv.Itoa(int(k.ResponseCode))
	v[LGRPCResponseStatus] = k.GRPCStatus
	v[LResponseFlags] = or(k.ResponseFlags, "-")
	return v
}
