package telemetry

import "testing"

var (
	localProductpage = &Peer{Workload: "productpage-v1", Namespace: "default", CanonicalService: "productpage", CanonicalRevision: "v1", App: "productpage", Version: "v1", Cluster: "Kubernetes"}
	peerReviews      = &Peer{Workload: "reviews-v2", Namespace: "default", CanonicalService: "reviews", CanonicalRevision: "v2", App: "reviews", Version: "v2", Cluster: "Kubernetes"}
)

// want lists only the labels a case checks; the rest are checked by other cases.
func TestKeyValues(t *testing.T) {
	cases := []struct {
		name string
		key  Key
		want map[Label]string
	}{
		{
			name: "client with peer, service from cluster metadata",
			key: Key{Reporter: ReporterSource, Local: localProductpage, Peer: peerReviews,
				Service:       ResolveService("reviews:9080", false, "", "outbound|9080||reviews.default.svc.cluster.local", &Service{Host: "reviews.default.svc.cluster.local", Name: "reviews"}),
				PeerPrincipal: "spiffe://cluster.local/ns/default/sa/bookinfo-reviews", LocalPrincipal: "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
				ResponseCode: 200, ResponseFlags: "-"},
			want: map[Label]string{
				LReporter: "source", LSourceWorkload: "productpage-v1", LSourceCanonicalService: "productpage", LSourceCanonicalRevision: "v1",
				LSourceWorkloadNamespace: "default", LSourcePrincipal: "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
				LSourceApp: "productpage", LSourceVersion: "v1", LSourceCluster: "Kubernetes",
				LDestinationWorkload: "reviews-v2", LDestinationWorkloadNamespace: "default",
				LDestinationPrincipal: "spiffe://cluster.local/ns/default/sa/bookinfo-reviews", LDestinationApp: "reviews", LDestinationVersion: "v2",
				LDestinationService: "reviews.default.svc.cluster.local", LDestinationCanonicalService: "reviews", LDestinationCanonicalRevision: "v2",
				LDestinationServiceName: "reviews", LDestinationServiceNamespace: "default", LDestinationCluster: "Kubernetes",
				LRequestProtocol: "http", LResponseCode: "200", LGRPCResponseStatus: "", LResponseFlags: "-", LConnectionSecurityPolicy: "unknown",
			},
		},
		{
			name: "client without peer info: unknown, latest, Host header fallback",
			key:  Key{Reporter: ReporterSource, Local: localProductpage, Service: ResolveService("example.com", false, "", "outbound|80||example.com", nil), ResponseCode: 503, ResponseFlags: "UF,URX"},
			want: map[Label]string{
				LDestinationWorkload: "unknown", LDestinationWorkloadNamespace: "unknown", LDestinationPrincipal: "unknown",
				LDestinationApp: "unknown", LDestinationVersion: "unknown", LDestinationCanonicalService: "unknown",
				LDestinationCanonicalRevision: "latest", LDestinationService: "example.com", LDestinationServiceName: "example.com",
				LDestinationServiceNamespace: "unknown", LDestinationCluster: "unknown", LSourcePrincipal: "unknown",
				LResponseCode: "503", LResponseFlags: "UF,URX",
			},
		},
		{
			name: "client, PassthroughCluster keeps the Host as service but names the cluster",
			key:  Key{Reporter: ReporterSource, Local: localProductpage, Service: ResolveService("api.github.com", false, "", "PassthroughCluster", nil)},
			want: map[Label]string{LDestinationService: "api.github.com", LDestinationServiceName: "PassthroughCluster", LResponseCode: "0", LResponseFlags: "-"},
		},
		{
			name: "client, route allow_any names PassthroughCluster",
			key:  Key{Reporter: ReporterSource, Local: localProductpage, Service: ResolveService("x.example", false, "allow_any", "PassthroughCluster", nil)},
			want: map[Label]string{LDestinationServiceName: "PassthroughCluster"},
		},
		{
			name: "client, route block_all names BlackHoleCluster",
			key:  Key{Reporter: ReporterSource, Local: localProductpage, Service: ResolveService("x.example", false, "block_all", "BlackHoleCluster", nil)},
			want: map[Label]string{LDestinationServiceName: "BlackHoleCluster", LDestinationService: "x.example"},
		},
		{
			name: "cluster metadata without name: first DNS label of the host",
			key:  Key{Reporter: ReporterSource, Local: localProductpage, Service: ResolveService("ignored", false, "", "outbound|80||ratings.prod.svc.cluster.local", &Service{Host: "ratings.prod.svc.cluster.local"})},
			want: map[Label]string{LDestinationService: "ratings.prod.svc.cluster.local", LDestinationServiceName: "ratings"},
		},
		{
			name: "SPIFFE namespace wins over the peer's claim",
			key:  Key{Reporter: ReporterSource, Local: localProductpage, Peer: &Peer{Workload: "w", Namespace: "claimed"}, PeerPrincipal: "spiffe://td/ns/real/sa/x"},
			want: map[Label]string{LDestinationWorkloadNamespace: "real", LDestinationServiceNamespace: "real"},
		},
		{
			name: "server, mTLS, service from inbound cluster metadata with fallback disabled",
			key: Key{Reporter: ReporterDestination, Local: peerReviews, Peer: localProductpage,
				Service:       ResolveService("reviews:9080", true, "", "inbound|9080||", &Service{Host: "reviews.default.svc.cluster.local", Name: "reviews"}),
				PeerPrincipal: "spiffe://cluster.local/ns/default/sa/bookinfo-productpage", LocalPrincipal: "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
				Protocol: ProtocolGRPC, ResponseCode: 200, GRPCStatus: "0"},
			want: map[Label]string{
				LReporter: "destination", LSourceWorkload: "productpage-v1", LSourceCanonicalService: "productpage", LSourceCanonicalRevision: "v1",
				LSourceWorkloadNamespace: "default", LSourcePrincipal: "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
				LSourceApp: "productpage", LSourceVersion: "v1", LSourceCluster: "Kubernetes",
				LDestinationWorkload: "reviews-v2", LDestinationWorkloadNamespace: "default", LDestinationPrincipal: "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
				LDestinationApp: "reviews", LDestinationVersion: "v2", LDestinationService: "reviews.default.svc.cluster.local",
				LDestinationCanonicalService: "reviews", LDestinationCanonicalRevision: "v2", LDestinationServiceName: "reviews",
				LDestinationServiceNamespace: "default", LDestinationCluster: "Kubernetes",
				LRequestProtocol: "grpc", LGRPCResponseStatus: "0", LConnectionSecurityPolicy: "mutual_tls",
			},
		},
		{
			name: "server, plaintext, no peer, no metadata: canonical service stands in",
			key:  Key{Reporter: ReporterDestination, Local: peerReviews, Service: ResolveService("reviews:9080", true, "", "inbound|9080||", nil)},
			want: map[Label]string{
				LSourceWorkload: "unknown", LSourceCanonicalRevision: "latest", LSourceWorkloadNamespace: "unknown", LSourcePrincipal: "unknown",
				LDestinationService: "reviews", LDestinationServiceName: "reviews", LDestinationPrincipal: "unknown",
				LConnectionSecurityPolicy: "none",
			},
		},
		{
			name: "server, only the peer presented a certificate: none",
			key:  Key{Reporter: ReporterDestination, Local: peerReviews, PeerPrincipal: "spiffe://td/ns/a/sa/b"},
			want: map[Label]string{LConnectionSecurityPolicy: "none", LSourceWorkloadNamespace: "a"},
		},
		{
			name: "server with Host fallback enabled uses the Host header",
			key:  Key{Reporter: ReporterDestination, Local: peerReviews, Service: ResolveService("reviews.default:9080", false, "", "inbound|9080||", nil)},
			want: map[Label]string{LDestinationService: "reviews.default:9080", LDestinationServiceName: "reviews.default:9080"},
		},
		{
			name: "local side without labels gets no defaults",
			key:  Key{Reporter: ReporterSource, Local: &Peer{Workload: "w", Namespace: "ns"}},
			want: map[Label]string{LSourceApp: "", LSourceVersion: "", LSourceCanonicalService: "", LSourceCluster: ""},
		},
		{
			name: "server, TLS state not visible (Go network filter): unknown, not none",
			key:  Key{Reporter: ReporterDestination, Local: peerReviews, Protocol: ProtocolTCP, TLSUnknown: true},
			want: map[Label]string{LConnectionSecurityPolicy: "unknown", LSourcePrincipal: "unknown"},
		},
		{
			name: "tcp",
			key:  Key{Reporter: ReporterSource, Local: localProductpage, Protocol: ProtocolTCP},
			want: map[Label]string{LRequestProtocol: "tcp"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := c.key.Values()
			for l, want := range c.want {
				if got[l] != want {
					t.Errorf("%s = %q, want %q", l, got[l], want)
				}
			}
		})
	}
}

func TestLabelSets(t *testing.T) {
	if len(HTTPLabels) != 25 || len(PeerLabels) != 20 || len(TCPLabels) != 23 {
		t.Fatalf("label set sizes: http %d grpc-msg %d tcp %d", len(HTTPLabels), len(PeerLabels), len(TCPLabels))
	}
	want := []string{"reporter", "source_workload", "source_canonical_service", "source_canonical_revision", "source_workload_namespace",
		"source_principal", "source_app", "source_version", "source_cluster", "destination_workload", "destination_workload_namespace",
		"destination_principal", "destination_app", "destination_version", "destination_service", "destination_canonical_service",
		"destination_canonical_revision", "destination_service_name", "destination_service_namespace", "destination_cluster",
		"request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy"}
	for i, l := range HTTPLabels {
		if l.String() != want[i] {
			t.Errorf("label %d = %s, want %s", i, l, want[i])
		}
	}
	if TCPLabels[20] != LRequestProtocol || TCPLabels[21] != LResponseFlags || TCPLabels[22] != LConnectionSecurityPolicy {
		t.Errorf("tcp tail = %v", TCPLabels[20:])
	}
}

func TestNamespaceFromPrincipal(t *testing.T) {
	for in, want := range map[string]string{
		"spiffe://cluster.local/ns/foo/sa/bar": "foo",
		"cluster.local/ns/foo/sa/bar":          "foo",
		"spiffe://td/ns/only":                  "only",
		"spiffe://td/sa/x":                     "",
		"":                                     "",
	} {
		if got := NamespaceFromPrincipal(in); got != want {
			t.Errorf("NamespaceFromPrincipal(%q) = %q, want %q", in, got, want)
		}
	}
}
