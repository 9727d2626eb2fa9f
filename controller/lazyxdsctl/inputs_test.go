package lazyxdsctl

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	networkingapi "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/lazyxds"
)

func TestWorkloadName(t *testing.T) {
	ctrlRef := func(kind, name string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{Kind: kind, Name: name, Controller: ptr.To(true)}}
	}
	for _, tc := range []struct {
		pod  corev1.Pod
		want string
	}{
		{corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-7d9f-abcde", Labels: map[string]string{"pod-template-hash": "7d9f"}, OwnerReferences: ctrlRef("ReplicaSet", "web-7d9f")}}, "web"},
		{corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0", OwnerReferences: ctrlRef("StatefulSet", "db")}}, "db"},
		{corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "nightly-28123-x", OwnerReferences: ctrlRef("Job", "nightly-28123")}}, "nightly"},
		{corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bare"}}, "bare"},
	} {
		if got := WorkloadName(&tc.pod); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.pod.Name, got, tc.want)
		}
	}
}

func TestPodIPsSkipsHostNetworkAndFinished(t *testing.T) {
	p := corev1.Pod{Status: corev1.PodStatus{PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}, {IP: "fd00::1"}}, Phase: corev1.PodRunning}}
	if got := PodIPs(&p); len(got) != 2 {
		t.Errorf("running pod: %v", got)
	}
	hn := p
	hn.Spec.HostNetwork = true
	if got := PodIPs(&hn); got != nil {
		t.Errorf("host-network pod: %v", got)
	}
	done := p
	done.Status.Phase = corev1.PodSucceeded
	if got := PodIPs(&done); got != nil {
		t.Errorf("finished pod: %v", got)
	}
}

func TestAggregateKeepsCommonLabels(t *testing.T) {
	a, b := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.1")
	labels, ips := aggregate([]podFacts{
		{labels: map[string]string{"app": "web", "pod-template-hash": "1", "version": "v1"}, ips: []netip.Addr{a}},
		{labels: map[string]string{"app": "web", "pod-template-hash": "2", "version": "v1"}, ips: []netip.Addr{b, a}},
	})
	if len(labels) != 2 || labels["app"] != "web" || labels["version"] != "v1" {
		t.Errorf("labels %v", labels)
	}
	if !slices.Equal(ips, []netip.Addr{b, a}) {
		t.Errorf("ips %v", ips)
	}
}

func TestServiceConversions(t *testing.T) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "reviews"},
		Spec: corev1.ServiceSpec{ClusterIPs: []string{"10.96.0.7"}, Ports: []corev1.ServicePort{
			{Name: "http-web", Port: 9080, Protocol: corev1.ProtocolTCP},
			{Name: "grpc", Port: 9090, Protocol: corev1.ProtocolTCP, AppProtocol: ptr.To("tcp")},
		}},
	}
	s := ServiceFrom(svc, "cluster.local")
	if s.Host != "reviews.shop.svc.cluster.local" || !s.Ports[0].HTTP || s.Ports[1].HTTP || s.Addresses[0] != netip.MustParseAddr("10.96.0.7") {
		t.Errorf("%+v", s)
	}
	se := &networkingv1.ServiceEntry{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ext", Name: "api"},
		Spec: networkingapi.ServiceEntry{Hosts: []string{"API.example.com", "*.cdn.example.com"},
			Ports: []*networkingapi.ServicePort{{Number: 443, Name: "https", Protocol: "TLS"}, {Number: 80, Name: "web", Protocol: "HTTP"}}},
	}
	ss := ServiceEntryServices(se)
	if len(ss) != 2 || ss[0].Host != "api.example.com" || !ss[0].ServiceEntry || ss[0].Ports[0].HTTP || !ss[0].Ports[1].HTTP {
		t.Errorf("%+v", ss)
	}
	vs := &networkingv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "reviews"},
		Spec: networkingapi.VirtualService{Hosts: []string{"reviews"}, Http: []*networkingapi.HTTPRoute{{
			Route:  []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: "reviews-v2"}}, {Destination: &networkingapi.Destination{Host: "reviews"}}},
			Mirror: &networkingapi.Destination{Host: "shadow.other.svc.cluster.local"},
		}}},
	}
	if got := VirtualServiceFrom(vs); !slices.Equal(got.Destinations, []string{"reviews", "reviews-v2", "shadow.other.svc.cluster.local"}) {
		t.Errorf("%+v", got)
	}
}

func TestChoosePolicy(t *testing.T) {
	at := func(min int) metav1.Time { return metav1.NewTime(time.Date(2026, 1, 1, 0, min, 0, 0, time.UTC)) }
	pol := func(ns, name string, created int, sel map[string]string, never ...string) *v1alpha1.LazyXDS {
		return &v1alpha1.LazyXDS{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: at(created)},
			Spec:       v1alpha1.LazyXDSSpec{Selector: v1alpha1.WorkloadSelector{MatchLabels: sel}, NeverLazyNamespaces: never},
		}
	}
	web := map[string]string{"app": "web"}
	mesh := pol("istio-system", "mesh", 0, nil, "legacy")
	nsAll := pol("shop", "all", 5, nil)
	nsWeb := pol("shop", "web", 3, web)
	for _, tc := range []struct {
		name     string
		policies []*v1alpha1.LazyXDS
		ns       string
		labels   map[string]string
		want     *v1alpha1.LazyXDS
	}{
		{"namespace policy beats mesh", []*v1alpha1.LazyXDS{mesh, nsAll}, "shop", web, nsAll},
		{"oldest namespace policy", []*v1alpha1.LazyXDS{nsAll, nsWeb}, "shop", web, nsWeb},
		{"selector must match", []*v1alpha1.LazyXDS{nsWeb}, "shop", map[string]string{"app": "db"}, nil},
		{"mesh policy elsewhere", []*v1alpha1.LazyXDS{mesh, nsAll}, "pay", web, mesh},
		{"never-lazy namespace", []*v1alpha1.LazyXDS{mesh}, "legacy", web, nil},
		{"kube-system never", []*v1alpha1.LazyXDS{mesh}, "kube-system", web, nil},
		{"root namespace itself never", []*v1alpha1.LazyXDS{mesh}, "istio-system", web, nil},
	} {
		if got := ChoosePolicy(tc.policies, tc.ns, tc.labels, "istio-system"); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestUserSidecarSelects(t *testing.T) {
	sc := func(labels, sel map[string]string) *networkingv1.Sidecar {
		s := &networkingv1.Sidecar{ObjectMeta: metav1.ObjectMeta{Labels: labels}}
		if sel != nil {
			s.Spec.WorkloadSelector = &networkingapi.WorkloadSelector{Labels: sel}
		}
		return s
	}
	wl := map[string]string{"app": "web", "version": "v1"}
	if !UserSidecarSelects(sc(nil, map[string]string{"app": "web"}), wl) {
		t.Error("user Sidecar selecting the workload")
	}
	if UserSidecarSelects(sc(nil, nil), wl) {
		t.Error("namespace-wide Sidecar is overridden by ours, not a conflict")
	}
	if UserSidecarSelects(sc(map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedBy}, map[string]string{"app": "web"}), wl) {
		t.Error("our own Sidecar")
	}
	if UserSidecarSelects(sc(nil, map[string]string{"app": "db"}), wl) {
		t.Error("other workload")
	}
}

func TestSidecarHostsAddsPolicyHosts(t *testing.T) {
	p := &v1alpha1.LazyXDS{Spec: v1alpha1.LazyXDSSpec{ExtraEgressHosts: []string{"db/mysql.db.svc.cluster.local", "istio-system/*"}}}
	eg := EgressOf(&v1alpha1.LazyXDS{Spec: v1alpha1.LazyXDSSpec{Egress: v1alpha1.LazyEgress{Namespace: "lazy", Name: "gw"}}}, lazyxds.Egress{})
	got := sidecarHosts(lazyxds.SidecarInput{Hosts: []string{"istio-system/*"}}, p, eg)
	want := []string{"db/mysql.db.svc.cluster.local", "istio-system/*", "lazy/gw.lazy.svc.cluster.local"}
	if !slices.Equal(got, want) {
		t.Errorf("%v, want %v", got, want)
	}
}
