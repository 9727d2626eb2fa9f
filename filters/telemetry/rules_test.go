package telemetry

import "testing"

// TestIstioStatsRules walks the label code of Istio's stats filter rule by
// rule: each row names the line of Envoy v1.39.1's
// contrib/istio/filters/http/istio_stats/source/istio_stats.cc it mirrors
// (populatePeerInfo, onStreamComplete, populateFlagsAndConnectionSecurity)
// and checks only the labels that rule decides.
func TestIstioStatsRules(t *testing.T) {
	const (
		spiffeReviews = "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"
		spiffePP      = "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage"
		reviewsHost   = "reviews.bookinfo.svc.cluster.local"
	)
	local := &Peer{Workload: "productpage-v1", Namespace: "bookinfo", CanonicalService: "productpage", CanonicalRevision: "v1", App: "productpage", Version: "v1", Cluster: "Kubernetes"}
	mxPeer := &Peer{Workload: "reviews-v2", Namespace: "bookinfo", CanonicalService: "reviews", CanonicalRevision: "v2", App: "reviews", Version: "v2", Cluster: "Kubernetes", Identity: spiffeReviews}
	// Endpoint metadata (istio.workload "name;ns;canonical;revision;cluster"):
	// no app, version or identity (metadata_object.cc convertEndpointMetadata).
	endpointPeer := &Peer{Workload: "ratings-v1", Namespace: "bookinfo", CanonicalService: "ratings", CanonicalRevision: "v1", Cluster: "Kubernetes"}
	reviewsMeta := &Service{Host: reviewsHost, Name: "reviews", Namespace: "bookinfo"}

	cases := []struct {
		line string // istio_stats.cc line(s) mirrored
		rule string
		key  Key
		want map[Label]string
	}{
		// Reporter (783-789): outbound and gateway listeners report as source.
		{"783-789", "client reporter", Key{Reporter: ReporterSource, Local: local}, map[Label]string{LReporter: "source"}},
		{"783-789", "server reporter", Key{Reporter: ReporterDestination, Local: local}, map[Label]string{LReporter: "destination"}},
		// Protocol (811-815, 939).
		{"811-815", "http protocol", Key{Reporter: ReporterSource, Local: local}, map[Label]string{LRequestProtocol: "http"}},
		{"811-813", "grpc protocol", Key{Reporter: ReporterSource, Local: local, Protocol: ProtocolGRPC, GRPCStatus: "14"}, map[Label]string{LRequestProtocol: "grpc", LGRPCResponseStatus: "14"}},
		// Response code (820): 0 when the stream never got one.
		{"820", "no response code", Key{Reporter: ReporterSource, Local: local}, map[Label]string{LResponseCode: "0"}},
		// gRPC status (822-831): empty for HTTP and for gRPC without status.
		{"831", "http has empty grpc status", Key{Reporter: ReporterSource, Local: local, ResponseCode: 200}, map[Label]string{LGRPCResponseStatus: ""}},
		// Flags (969): Envoy's short string, "-" when none.
		{"969", "failed upstream flags", Key{Reporter: ReporterSource, Local: local, ResponseCode: 503, ResponseFlags: "UF,URX"}, map[Label]string{LResponseFlags: "UF,URX", LResponseCode: "503"}},
		{"969", "no flags", Key{Reporter: ReporterSource, Local: local}, map[Label]string{LResponseFlags: "-"}},
		// Security policy (970-973): only the server side knows it.
		{"971-973", "client security unknown", Key{Reporter: ReporterSource, Local: local, PeerPrincipal: spiffeReviews, LocalPrincipal: spiffePP}, map[Label]string{LConnectionSecurityPolicy: "unknown"}},
		{"1070", "server mutual_tls needs both SANs", Key{Reporter: ReporterDestination, Local: local, PeerPrincipal: spiffeReviews, LocalPrincipal: spiffePP}, map[Label]string{LConnectionSecurityPolicy: "mutual_tls"}},
		{"1070", "server plaintext is none", Key{Reporter: ReporterDestination, Local: local}, map[Label]string{LConnectionSecurityPolicy: "none"}},

		// Destination service (992-1041).
		{"996-1000", "Host header fallback (outbound)", Key{Reporter: ReporterSource, Local: local, Service: ResolveService("example.com:8080", false, "", "outbound|8080||example.com", nil)},
			map[Label]string{LDestinationService: "example.com:8080", LDestinationServiceName: "example.com:8080", LDestinationServiceNamespace: "unknown"}},
		{"996", "fallback disabled (inbound, gateway): unknown", Key{Reporter: ReporterSource, Local: local, Service: ResolveService("example.com", true, "", "outbound|80||example.com", nil)},
			map[Label]string{LDestinationService: "unknown", LDestinationServiceName: "unknown"}},
		{"1002-1003", "block_all route (blackhole)", Key{Reporter: ReporterSource, Local: local, Service: ResolveService("x.example", false, "block_all", "", nil), ResponseCode: 502},
			map[Label]string{LDestinationService: "x.example", LDestinationServiceName: "BlackHoleCluster", LDestinationWorkload: "unknown"}},
		{"1004-1005", "allow_any route (passthrough)", Key{Reporter: ReporterSource, Local: local, Service: ResolveService("api.github.com", false, "allow_any", "PassthroughCluster", nil)},
			map[Label]string{LDestinationService: "api.github.com", LDestinationServiceName: "PassthroughCluster"}},
		{"1010-1014", "BlackHoleCluster by name", Key{Reporter: ReporterSource, Local: local, Service: ResolveService("10.0.0.9:15001", false, "", "BlackHoleCluster", reviewsMeta)},
			map[Label]string{LDestinationServiceName: "BlackHoleCluster", LDestinationService: "10.0.0.9:15001", LDestinationServiceNamespace: "unknown"}},
		{"1010-1014", "InboundPassthroughCluster by name", Key{Reporter: ReporterDestination, Local: local, Service: ResolveService("ignored", true, "", "InboundPassthroughCluster", nil)},
			map[Label]string{LDestinationServiceName: "InboundPassthroughCluster", LDestinationService: "productpage"}},
		{"1023-1027", "metadata host wins over Host header", Key{Reporter: ReporterSource, Local: local, Service: ResolveService("reviews:9080", false, "", "outbound|9080||"+reviewsHost, reviewsMeta)},
			map[Label]string{LDestinationService: reviewsHost, LDestinationServiceName: "reviews"}},
		{"1035-1037", "metadata without name: first DNS label", Key{Reporter: ReporterSource, Local: local, Service: ResolveService("", false, "", "outbound|9080||"+reviewsHost, &Service{Host: reviewsHost})},
			map[Label]string{LDestinationServiceName: "reviews"}},

		// Client peer principal (1074-1093): certificate, else MX IDENTITY.
		{"1077-1079", "client principal from the upstream certificate", Key{Reporter: ReporterSource, Local: local, Peer: mxPeer, PeerPrincipal: "spiffe://cluster.local/ns/other/sa/x"},
			map[Label]string{LDestinationPrincipal: "spiffe://cluster.local/ns/other/sa/x", LDestinationWorkloadNamespace: "other"}},
		{"1080-1085", "plaintext: client principal from MX IDENTITY", Key{Reporter: ReporterSource, Local: local, Peer: mxPeer},
			map[Label]string{LDestinationPrincipal: spiffeReviews, LDestinationWorkloadNamespace: "bookinfo"}},
		{"1080-1085", "strict principals: peer interned without identity", Key{Reporter: ReporterSource, Local: local, Peer: &Peer{Workload: "reviews-v2", Namespace: "bookinfo"}},
			map[Label]string{LDestinationPrincipal: "unknown"}},
		{"1089-1091", "client source_principal is the local certificate", Key{Reporter: ReporterSource, Local: local, LocalPrincipal: spiffePP},
			map[Label]string{LSourcePrincipal: spiffePP}},
		// Server principals (1047-1070): certificate only, never MX.
		{"1047-1066", "server source_principal ignores MX IDENTITY", Key{Reporter: ReporterDestination, Local: local, Peer: mxPeer},
			map[Label]string{LSourcePrincipal: "unknown", LSourceWorkloadNamespace: "bookinfo"}},
		{"1186-1187", "server destination_principal is the local certificate", Key{Reporter: ReporterDestination, Local: local, LocalPrincipal: spiffePP},
			map[Label]string{LDestinationPrincipal: spiffePP}},

		// Peer namespace (1097-1106): the principal's /ns/ wins over the claim.
		{"1097-1106", "SAN namespace wins", Key{Reporter: ReporterDestination, Local: local, Peer: &Peer{Workload: "w", Namespace: "claimed"}, PeerPrincipal: "spiffe://td/ns/real/sa/x"},
			map[Label]string{LSourceWorkloadNamespace: "real"}},
		{"1104-1106", "no SAN: peer's namespace", Key{Reporter: ReporterDestination, Local: local, Peer: &Peer{Workload: "w", Namespace: "claimed"}},
			map[Label]string{LSourceWorkloadNamespace: "claimed"}},

		// Server side source labels (1110-1132): unknown/latest without a peer.
		{"1110-1132", "server, no peer", Key{Reporter: ReporterDestination, Local: local},
			map[Label]string{LSourceWorkload: "unknown", LSourceCanonicalService: "unknown", LSourceCanonicalRevision: "latest", LSourceWorkloadNamespace: "unknown",
				LSourcePrincipal: "unknown", LSourceApp: "unknown", LSourceVersion: "unknown", LSourceCluster: "unknown"}},
		{"1110-1132", "server, peer from MX", Key{Reporter: ReporterDestination, Local: local, Peer: mxPeer},
			map[Label]string{LSourceWorkload: "reviews-v2", LSourceCanonicalService: "reviews", LSourceCanonicalRevision: "v2", LSourceApp: "reviews", LSourceVersion: "v2", LSourceCluster: "Kubernetes"}},
		// Server side destination labels (1184-1199): the local node's.
		{"1184-1199", "server destination is the local workload", Key{Reporter: ReporterDestination, Local: local, Service: ResolveService("", true, "", "inbound|9080||", &Service{Host: "productpage.bookinfo.svc.cluster.local", Name: "productpage", Namespace: "elsewhere"})},
			map[Label]string{LDestinationWorkload: "productpage-v1", LDestinationWorkloadNamespace: "bookinfo", LDestinationApp: "productpage", LDestinationVersion: "v1",
				LDestinationService: "productpage.bookinfo.svc.cluster.local", LDestinationCanonicalService: "productpage", LDestinationCanonicalRevision: "v1",
				LDestinationServiceName: "productpage", LDestinationServiceNamespace: "bookinfo", LDestinationCluster: "Kubernetes"}},
		{"1190-1197", "server without service metadata: canonical name", Key{Reporter: ReporterDestination, Local: local, Service: ResolveService("", true, "", "inbound|9080||", nil)},
			map[Label]string{LDestinationService: "productpage", LDestinationServiceName: "productpage"}},

		// Client side source labels (1206-1214): the local node's.
		{"1206-1214", "client source is the local workload", Key{Reporter: ReporterSource, Local: local},
			map[Label]string{LSourceWorkload: "productpage-v1", LSourceCanonicalService: "productpage", LSourceCanonicalRevision: "v1", LSourceWorkloadNamespace: "bookinfo",
				LSourcePrincipal: "unknown", LSourceApp: "productpage", LSourceVersion: "v1", LSourceCluster: "Kubernetes"}},
		// Client side destination labels (1215-1248).
		{"1215-1248", "client, no peer (no MX, no endpoint metadata)", Key{Reporter: ReporterSource, Local: local, Service: ResolveService("example.com", false, "", "outbound|80||example.com", nil)},
			map[Label]string{LDestinationWorkload: "unknown", LDestinationWorkloadNamespace: "unknown", LDestinationPrincipal: "unknown", LDestinationApp: "unknown",
				LDestinationVersion: "unknown", LDestinationCanonicalService: "unknown", LDestinationCanonicalRevision: "latest", LDestinationServiceNamespace: "unknown", LDestinationCluster: "unknown"}},
		{"1241-1244", "failed upstream, no peer: service namespace from cluster metadata", Key{Reporter: ReporterSource, Local: local, ResponseCode: 503, ResponseFlags: "UF,URX",
			Service: ResolveService("ratings:9080", false, "", "outbound|9080||ratings.bookinfo.svc.cluster.local", &Service{Host: "ratings.bookinfo.svc.cluster.local", Name: "ratings", Namespace: "bookinfo"})},
			map[Label]string{LDestinationServiceNamespace: "bookinfo", LDestinationWorkloadNamespace: "unknown", LDestinationWorkload: "unknown", LDestinationService: "ratings.bookinfo.svc.cluster.local"}},
		{"1241-1244", "metadata namespace wins over the peer's", Key{Reporter: ReporterSource, Local: local, Peer: &Peer{Workload: "w", Namespace: "peer-ns"},
			Service: ResolveService("", false, "", "outbound|80||svc.meta-ns.svc.cluster.local", &Service{Host: "svc.meta-ns.svc.cluster.local", Name: "svc", Namespace: "meta-ns"})},
			map[Label]string{LDestinationServiceNamespace: "meta-ns", LDestinationWorkloadNamespace: "peer-ns"}},
		{"1241-1244", "no metadata namespace (ServiceEntry without one): peer's", Key{Reporter: ReporterSource, Local: local, Peer: mxPeer,
			Service: ResolveService("", false, "", "outbound|443||api.example.com", &Service{Host: "api.example.com"})},
			map[Label]string{LDestinationServiceNamespace: "bookinfo", LDestinationServiceName: "api"}},
		{"984-988", "endpoint-metadata fallback peer", Key{Reporter: ReporterSource, Local: local, Peer: endpointPeer, Service: ResolveService("", false, "", "outbound|9080||ratings.bookinfo.svc.cluster.local", &Service{Host: "ratings.bookinfo.svc.cluster.local", Name: "ratings", Namespace: "bookinfo"})},
			map[Label]string{LDestinationWorkload: "ratings-v1", LDestinationWorkloadNamespace: "bookinfo", LDestinationCanonicalService: "ratings", LDestinationCanonicalRevision: "v1",
				LDestinationCluster: "Kubernetes", LDestinationApp: "unknown", LDestinationVersion: "unknown", LDestinationPrincipal: "unknown"}},
		{"1215-1248", "client, peer from MX", Key{Reporter: ReporterSource, Local: local, Peer: mxPeer, Service: ResolveService("reviews:9080", false, "", "outbound|9080||"+reviewsHost, reviewsMeta)},
			map[Label]string{LDestinationWorkload: "reviews-v2", LDestinationApp: "reviews", LDestinationVersion: "v2", LDestinationCanonicalService: "reviews",
				LDestinationCanonicalRevision: "v2", LDestinationCluster: "Kubernetes", LDestinationServiceNamespace: "bookinfo"}},
		// Gateways report as clients (483-497: OUTBOUND listeners) with the
		// Host fallback disabled (istiod's disableHostHeaderFallback).
		{"488-497", "gateway: client rules, no Host fallback", Key{Reporter: ReporterSource, Local: &Peer{Workload: "istio-ingressgateway", Namespace: "istio-system", CanonicalService: "istio-ingressgateway", CanonicalRevision: "latest"},
			Service: ResolveService("shop.example.com", true, "", "outbound|9080||"+reviewsHost, reviewsMeta)},
			map[Label]string{LReporter: "source", LSourceWorkload: "istio-ingressgateway", LSourceWorkloadNamespace: "istio-system", LDestinationService: reviewsHost,
				LDestinationServiceNamespace: "bookinfo", LDestinationWorkload: "unknown"}},
		{"488-497", "gateway to an unknown host: unknown service", Key{Reporter: ReporterSource, Local: local, Service: ResolveService("shop.example.com", true, "", "outbound|80||shop.example.com", nil)},
			map[Label]string{LDestinationService: "unknown", LDestinationServiceName: "unknown"}},
	}
	for _, c := range cases {
		t.Run(c.line+" "+c.rule, func(t *testing.T) {
			v := c.key.Values()
			for l, want := range c.want {
				if v[l] != want {
					t.Errorf("istio_stats.cc:%s (%s): %s = %q, want %q", c.line, c.rule, l, v[l], want)
				}
			}
		})
	}
}
