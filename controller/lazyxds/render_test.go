package lazyxds

import (
	"bytes"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/wellknown"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/lua/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml")

func toYAML(t testing.TB, objs ...any) []byte {
	t.Helper()
	var buf bytes.Buffer
	for i, o := range objs {
		b, err := yaml.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			buf.WriteString("---\n")
		}
		buf.Write(b)
	}
	return buf.Bytes()
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden.yaml")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from golden (run go test -update to accept):\n%s", path, got)
	}
}

func TestRenderSidecarGolden(t *testing.T) {
	pp := WorkloadKey{"bookinfo", "productpage"}
	tests := []struct {
		name  string
		setup func(g *Graph)
		err   string // golden of a refusal is its message
	}{
		{"sidecar-1dep", func(g *Graph) {
			g.Learn(pp, "reviews.bookinfo.svc.cluster.local", t0)
		}, ""},
		{"sidecar-3deps-virtualservice", func(g *Graph) {
			g.UpsertService(httpSvc("bookinfo", "reviews-v2", 9080))
			g.UpsertService(httpSvc("payments", "payments", 8080))
			g.UpsertVirtualService(VirtualService{Namespace: "bookinfo", Name: "reviews", Hosts: []string{"reviews"},
				Destinations: []string{"reviews", "reviews-v2"}})
			g.Learn(pp, "reviews.bookinfo.svc.cluster.local", t0)
			g.Learn(pp, "details.bookinfo.svc.cluster.local", t0)
			g.Learn(pp, "api.example.com", t0)
		}, ""},
		{"sidecar-refused-overlap", func(g *Graph) {
			g.UpsertWorkload(Workload{Namespace: "bookinfo", Name: "productpage-canary", Labels: map[string]string{"app": "productpage", "track": "canary"}, Lazy: true})
			g.Learn(pp, "reviews.bookinfo.svc.cluster.local", t0)
		}, "lazyxds: no Sidecar for bookinfo/productpage: labels app=productpage also select workload productpage-canary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, _ := newTestGraph(Options{ExtraHosts: []string{"observability/otel-collector.observability.svc.cluster.local"}})
			tt.setup(g)
			in, ok := g.SidecarInput(pp)
			if !ok {
				t.Fatal("no input")
			}
			sc, err := RenderSidecar(in)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tt.name, toYAML(t, sc))
		})
	}
}

func TestRenderEgressGolden(t *testing.T) {
	objs := RenderEgress(Egress{}, []uint32{9080, 8080, 80, 9080})
	var all []any
	for _, o := range objs.Objects() {
		all = append(all, o)
	}
	golden(t, "egress", toYAML(t, all...))
}

func TestRenderRedirectGolden(t *testing.T) {
	ef, err := RenderRedirect(RedirectInput{
		Namespace: "bookinfo", Policy: "default", Selector: map[string]string{"lazy.leanmesh.io/enabled": "true"},
		Namespaces: []string{"bookinfo", "payments"}, ServiceEntryHosts: []string{"api.example.com", "*.googleapis.com"},
	}, Egress{})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "redirect", toYAML(t, ef))
}

// TestRedirectSizeIndependentOfServices is the aeraki#115 regression test: the
// redirect for 10,000 services is byte-identical to the one for 10.
func TestRedirectSizeIndependentOfServices(t *testing.T) {
	render := func(n int) []byte {
		g := NewGraph(Options{})
		for i := range n {
			g.UpsertService(httpSvc(fmt.Sprintf("ns%d", i%5), fmt.Sprintf("svc%d", i), uint32(8000+i%3)))
		}
		g.UpsertService(Service{Namespace: "ext", Host: "api.example.com", Ports: []Port{{Number: 443, HTTP: true}}, ServiceEntry: true})
		ef, err := RenderRedirect(RedirectInput{Namespace: "ns0", Policy: "p", Namespaces: g.Namespaces(), ServiceEntryHosts: g.ServiceEntryHosts()}, Egress{})
		if err != nil {
			t.Fatal(err)
		}
		return toYAML(t, ef)
	}
	small, large := render(10), render(10_000)
	if !bytes.Equal(small, large) {
		t.Fatalf("redirect differs: %d bytes for 10 services, %d for 10,000", len(small), len(large))
	}
	t.Logf("redirect EnvoyFilter: %d bytes for 10 and for 10,000 services", len(large))
}

func TestAuthorityRegexes(t *testing.T) {
	mesh := regexp.MustCompile(MeshAuthorityRegex("cluster.local", []string{"bookinfo", "payments"}))
	se := regexp.MustCompile(HostsRegex([]string{"api.example.com", "*.googleapis.com"}))
	tests := []struct {
		authority string
		mesh, se  bool
	}{
		{"reviews", true, false},
		{"reviews:9080", true, false},
		{"reviews.bookinfo", true, false},
		{"Reviews.Bookinfo:9080", true, false},
		{"reviews.bookinfo.svc", true, false},
		{"reviews.bookinfo.svc.cluster.local:9080", true, false},
		{"example.com", false, false}, // two labels, not a namespace: keeps passthrough
		{"www.example.com", false, false},
		{"api.example.com:443", false, true},
		{"storage.googleapis.com", false, true},
		{"googleapis.com", false, false},
		{"10.0.0.1:80", false, false},
		{"", false, false},
	}
	for _, tt := range tests {
		if got := mesh.MatchString(tt.authority); got != tt.mesh {
			t.Errorf("mesh regex on %q = %v", tt.authority, got)
		}
		if got := se.MatchString(tt.authority); got != tt.se {
			t.Errorf("ServiceEntry regex on %q = %v", tt.authority, got)
		}
	}
}

// BenchmarkRenderSidecar renders a workload with n learned dependencies out of n services.
func BenchmarkRenderSidecar(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			g := NewGraph(Options{})
			k := WorkloadKey{"ns0", "caller"}
			g.UpsertWorkload(Workload{Namespace: k.Namespace, Name: k.Name, Labels: map[string]string{"app": "caller"}, Lazy: true})
			for i := range n {
				s := httpSvc(fmt.Sprintf("ns%d", i%20), fmt.Sprintf("svc%d", i), 8080)
				g.UpsertService(s)
				g.Learn(k, s.Host, t0)
			}
			b.ReportAllocs()
			for b.Loop() {
				in, _ := g.SidecarInput(k)
				if _, err := RenderSidecar(in); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/sidecar")
		})
	}
}

// BenchmarkSidecarWritesForBurst replays a burst of 100k access-log entries
// (100 lazy workloads each calling 20 services, random order, in batches of 32
// as the ALS server delivers them) arriving at a given rate, with the
// reconciler draining once per second of log time, and reports how many
// Drains produced changes and how many Sidecar writes resulted.
func BenchmarkSidecarWritesForBurst(b *testing.B) {
	const entries, workloads, services, batch = 100_000, 100, 20, 32
	for _, rate := range []int{20_000, 200_000} { // entries per second
		b.Run(fmt.Sprintf("rate=%d/s", rate), func(b *testing.B) {
			obs := make([]Observation, entries)
			rnd := uint64(1)
			for i := range obs {
				rnd = rnd*6364136223846793005 + 1442695040888963407
				w, s := int(rnd>>33)%workloads, int(rnd>>17)%services
				obs[i] = Observation{Caller: netip.AddrFrom4([4]byte{10, 1, 0, byte(w)}),
					Cluster: fmt.Sprintf("outbound|8080||svc%d.ns.svc.cluster.local", s),
					At:      t0.Add(time.Duration(i) * time.Second / time.Duration(rate))}
			}
			var writes, flushes int
			for b.Loop() {
				g := NewGraph(Options{})
				for w := range workloads {
					g.UpsertWorkload(Workload{Namespace: "ns", Name: fmt.Sprintf("w%d", w), Labels: map[string]string{"app": fmt.Sprintf("w%d", w)},
						IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 1, 0, byte(w)})}, Lazy: true})
				}
				for s := range services {
					g.UpsertService(httpSvc("ns", fmt.Sprintf("svc%d", s), 8080))
				}
				g.Drain() // initial Sidecars, not part of the burst
				writes, flushes = 0, 0
				nextDrain := t0.Add(time.Second)
				drain := func() {
					if n := len(g.Drain()); n > 0 {
						writes += n
						flushes++
					}
				}
				for i := 0; i < entries; i += batch {
					chunk := obs[i:min(i+batch, entries)]
					if chunk[0].At.After(nextDrain) {
						drain()
						nextDrain = nextDrain.Add(time.Second)
					}
					g.Record(chunk)
				}
				drain()
			}
			b.ReportMetric(float64(flushes), "flushes-with-changes")
			b.ReportMetric(float64(writes), "sidecar-writes")
			b.ReportMetric(float64(writes)/workloads, "writes/workload")
		})
	}
}

// TestPatchesAreValidEnvoyConfig decodes every rendered patch value into the
// Envoy type Istio will merge it into, so a misspelt field fails here rather
// than in istiod's logs.
func TestPatchesAreValidEnvoyConfig(t *testing.T) {
	redirect, err := RenderRedirect(RedirectInput{Namespace: "ns", Policy: "p", ServiceEntryHosts: []string{"a.example.com"}}, Egress{})
	if err != nil {
		t.Fatal(err)
	}
	egress := RenderEgress(Egress{}, nil).EnvoyFilter
	for _, ef := range []*networkingv1alpha3.EnvoyFilter{redirect, egress} {
		for i, p := range ef.Spec.ConfigPatches {
			var msg proto.Message
			switch p.ApplyTo {
			case networkingapi.EnvoyFilter_HTTP_ROUTE:
				msg = &routev3.Route{}
			case networkingapi.EnvoyFilter_CLUSTER:
				msg = &clusterv3.Cluster{}
			case networkingapi.EnvoyFilter_NETWORK_FILTER, networkingapi.EnvoyFilter_HTTP_FILTER:
				msg = &listenerv3.Filter{}
				if p.ApplyTo == networkingapi.EnvoyFilter_NETWORK_FILTER {
					msg = &listenerv3.Filter{Name: wellknown.HTTPConnectionManager}
				}
			default:
				t.Fatalf("%s patch %d: unexpected applyTo %v", ef.Name, i, p.ApplyTo)
			}
			b, err := protojson.Marshal(p.Patch.Value)
			if err != nil {
				t.Fatal(err)
			}
			if err := protojson.Unmarshal(b, msg); err != nil {
				t.Errorf("%s patch %d (%v): %v", ef.Name, i, p.ApplyTo, err)
			}
		}
	}
}

// A revisioned Istio injects the egress through istio.io/rev, which only
// that revision's webhook selects; sidecar.istio.io/inject needs a default.
func TestRenderEgressRevision(t *testing.T) {
	for rev, want := range map[string]map[string]string{
		"":       {"sidecar.istio.io/inject": "true"},
		"canary": {"istio.io/rev": "canary"},
	} {
		l := RenderEgress(Egress{Revision: rev}, nil).Deployment.Spec.Template.Labels
		for k, v := range want {
			if l[k] != v {
				t.Errorf("revision %q: pod label %s=%q, want %q", rev, k, l[k], v)
			}
		}
		if _, both := l["istio.io/rev"]; both && l["sidecar.istio.io/inject"] != "" {
			t.Errorf("revision %q: both injection labels: %v", rev, l)
		}
	}
}
