package lazyxds

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	networkingapi "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
)

func lazyPorts(m map[string][]uint32) func(string) ([]uint32, bool) {
	return func(h string) ([]uint32, bool) { p, ok := m[h]; return p, ok }
}

var shopPorts = lazyPorts(map[string][]uint32{
	"reviews.shop.svc.cluster.local": {9080},
	"multi.shop.svc.cluster.local":   {80, 9090},
})

func dest(host, subset string, w int32) *networkingapi.HTTPRouteDestination {
	return &networkingapi.HTTPRouteDestination{Destination: &networkingapi.Destination{Host: host, Subset: subset}, Weight: w}
}

func userVS(spec *networkingapi.VirtualService) *networkingv1.VirtualService {
	vs := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "reviews", UID: "uid-1"}}
	proto.Merge(&vs.Spec, spec)
	return vs
}

func TestRenderEgressRoutesCopiesRouting(t *testing.T) {
	weighted := &networkingapi.HTTPRoute{
		Name:    "weighted",
		Match:   []*networkingapi.HTTPMatchRequest{{Headers: map[string]*networkingapi.StringMatch{"end-user": {MatchType: &networkingapi.StringMatch_Exact{Exact: "jason"}}}}},
		Route:   []*networkingapi.HTTPRouteDestination{dest("reviews", "v1", 80), dest("reviews", "v2", 20)},
		Timeout: durationpb.New(3e9),
		Retries: &networkingapi.HTTPRetry{Attempts: 3, PerTryTimeout: durationpb.New(1e9)},
	}
	def := &networkingapi.HTTPRoute{Name: "default", Route: []*networkingapi.HTTPRouteDestination{dest("reviews", "v1", 0)}}
	orig := userVS(&networkingapi.VirtualService{Hosts: []string{"reviews", "not-lazy.example.com"}, Http: []*networkingapi.HTTPRoute{weighted, def}})
	before := orig.DeepCopy()
	egs := []Egress{{}, {Namespace: "gw", Name: "other"}}
	cp, problems := RenderEgressRoutes(EgressRoutesInput{VirtualService: orig, Egresses: egs, LazyPorts: shopPorts})
	if len(problems) != 0 {
		t.Fatalf("problems %v", problems)
	}
	if cp == nil {
		t.Fatal("no copy")
	}
	if cp.Namespace != "shop" || cp.Name != "leanmesh-lazy-vs-reviews" || cp.Labels[v1alpha1.LabelManagedBy] != v1alpha1.ManagedBy ||
		len(cp.OwnerReferences) != 1 || cp.OwnerReferences[0].UID != "uid-1" || cp.OwnerReferences[0].Kind != "VirtualService" {
		t.Fatalf("metadata %+v", cp.ObjectMeta)
	}
	if got := strings.Join(cp.Spec.Hosts, ","); got != "reviews" {
		t.Errorf("hosts %s (only lazy hosts, as written)", got)
	}
	if got := strings.Join(cp.Spec.Gateways, ","); got != "gw/other,istio-system/leanmesh-lazy-egress" {
		t.Errorf("gateways %s", got)
	}
	if got := strings.Join(cp.Spec.ExportTo, ","); got != "gw,istio-system" {
		t.Errorf("exportTo %s", got)
	}
	if len(cp.Spec.Http) != 2 || !proto.Equal(cp.Spec.Http[0], weighted) || !proto.Equal(cp.Spec.Http[1], def) {
		t.Errorf("routes differ: %v", cp.Spec.Http)
	}
	if !proto.Equal(&orig.Spec, &before.Spec) {
		t.Errorf("the user's VirtualService was modified")
	}
}

func TestRenderEgressRoutesUnreproducible(t *testing.T) {
	m := func(f func(*networkingapi.HTTPMatchRequest)) *networkingapi.HTTPMatchRequest {
		r := &networkingapi.HTTPMatchRequest{Uri: &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Prefix{Prefix: "/"}}}
		f(r)
		return r
	}
	route := func(name string, ms ...*networkingapi.HTTPMatchRequest) *networkingapi.HTTPRoute {
		return &networkingapi.HTTPRoute{Name: name, Match: ms, Route: []*networkingapi.HTTPRouteDestination{dest("reviews", name, 0)}}
	}
	tests := []struct {
		name     string
		spec     *networkingapi.VirtualService
		routes   []string // route names kept, in order; nil: no copy
		problems []string // substrings, in order
	}{
		{"sourceLabels route dropped and reported",
			&networkingapi.VirtualService{Hosts: []string{"reviews"}, Http: []*networkingapi.HTTPRoute{
				route("canary", m(func(r *networkingapi.HTTPMatchRequest) { r.SourceLabels = map[string]string{"app": "productpage"} })),
				route("rest")}},
			[]string{"rest"}, []string{"shop/reviews: http route canary match 0 selects callers"}},
		{"sourceNamespace match dropped, the other match of the route kept",
			&networkingapi.VirtualService{Hosts: []string{"reviews"}, Http: []*networkingapi.HTTPRoute{
				route("mixed", m(func(r *networkingapi.HTTPMatchRequest) { r.SourceNamespace = "front" }), m(func(*networkingapi.HTTPMatchRequest) {}))}},
			[]string{"mixed"}, []string{"match 0 selects callers"}},
		{"gateway-only match dropped silently, mesh match kept",
			&networkingapi.VirtualService{Hosts: []string{"reviews"}, Gateways: []string{"mesh", "istio-system/ingress"}, Http: []*networkingapi.HTTPRoute{
				route("ingress", m(func(r *networkingapi.HTTPMatchRequest) { r.Gateways = []string{"istio-system/ingress"} })),
				route("mesh", m(func(r *networkingapi.HTTPMatchRequest) { r.Gateways = []string{"mesh"} }))}},
			[]string{"mesh"}, nil},
		{"single-port service: port match kept without the port, other port dropped",
			&networkingapi.VirtualService{Hosts: []string{"reviews"}, Http: []*networkingapi.HTTPRoute{
				route("p9080", m(func(r *networkingapi.HTTPMatchRequest) { r.Port = 9080 })),
				route("p1", m(func(r *networkingapi.HTTPMatchRequest) { r.Port = 1 }))}},
			[]string{"p9080"}, nil},
		{"multi-port service port match reported",
			&networkingapi.VirtualService{Hosts: []string{"multi"}, Http: []*networkingapi.HTTPRoute{
				route("p80", m(func(r *networkingapi.HTTPMatchRequest) { r.Port = 80 })), route("rest")}},
			[]string{"rest"}, []string{"matches port 80 of a multi-port service"}},
		{"gateway-only VirtualService: no copy", &networkingapi.VirtualService{Hosts: []string{"reviews"}, Gateways: []string{"istio-system/ingress"}, Http: []*networkingapi.HTTPRoute{route("a")}}, nil, nil},
		{"no lazy host: no copy", &networkingapi.VirtualService{Hosts: []string{"mysql"}, Http: []*networkingapi.HTTPRoute{route("a")}}, nil, nil},
		{"already bound by the user: no copy",
			&networkingapi.VirtualService{Hosts: []string{"reviews"}, Gateways: []string{"mesh", "istio-system/leanmesh-lazy-egress"}, Http: []*networkingapi.HTTPRoute{route("a")}}, nil, nil},
		{"bound but not exported to the egress: copied",
			&networkingapi.VirtualService{Hosts: []string{"reviews"}, Gateways: []string{"mesh", "istio-system/leanmesh-lazy-egress"}, ExportTo: []string{"."}, Http: []*networkingapi.HTTPRoute{route("a")}}, []string{"a"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cp, problems := RenderEgressRoutes(EgressRoutesInput{VirtualService: userVS(tc.spec), Egresses: []Egress{{}}, LazyPorts: shopPorts})
			if len(problems) != len(tc.problems) {
				t.Fatalf("problems %q, want %q", problems, tc.problems)
			}
			for i, p := range tc.problems {
				if !strings.Contains(problems[i], p) {
					t.Errorf("problem %d = %q, want it to contain %q", i, problems[i], p)
				}
			}
			if tc.routes == nil {
				if cp != nil {
					t.Fatalf("copy rendered: %v", cp.Spec.Http)
				}
				return
			}
			if cp == nil {
				t.Fatal("no copy")
			}
			var names []string
			for _, r := range cp.Spec.Http {
				names = append(names, r.Name)
				for _, mm := range r.Match {
					if mm.Port != 0 || len(mm.Gateways) != 0 || len(mm.SourceLabels) != 0 || mm.SourceNamespace != "" {
						t.Errorf("route %s keeps an egress-incompatible match: %v", r.Name, mm)
					}
				}
			}
			if strings.Join(names, ",") != strings.Join(tc.routes, ",") {
				t.Errorf("routes %v, want %v", names, tc.routes)
			}
		})
	}
}

func TestRenderEgressRoutesSkipsOwnObjects(t *testing.T) {
	vs := userVS(&networkingapi.VirtualService{Hosts: []string{"reviews"}, Http: []*networkingapi.HTTPRoute{{Route: []*networkingapi.HTTPRouteDestination{dest("reviews", "", 0)}}}})
	vs.Labels = managedLabels()
	if cp, _ := RenderEgressRoutes(EgressRoutesInput{VirtualService: vs, Egresses: []Egress{{}}, LazyPorts: shopPorts}); cp != nil {
		t.Fatal("copied a leanmesh object")
	}
	if n := EgressVSName(strings.Repeat("a", 300)); len(n) != 253 {
		t.Fatalf("long name: %d", len(n))
	}
}
