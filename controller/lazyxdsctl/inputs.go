package lazyxdsctl

import (
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strings"

	networkingapi "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/lazyxds"
)

// Pure conversions from Kubernetes/Istio objects to the graph's inputs. No
// client, no locks: the informer handlers call them and tests table them.

var cronJobName = regexp.MustCompile(`^(.+)-[0-9]+$`)

// WorkloadName names a pod's workload from its controller reference without
// extra API reads, as Istio does: a ReplicaSet <deployment>-<pod-template-hash>
// stands for its Deployment, a Job <cronjob>-<digits> for its CronJob, a bare
// pod for itself.
func WorkloadName(pod *corev1.Pod) string {
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		return pod.Name
	}
	switch ref.Kind {
	case "ReplicaSet":
		if h := pod.Labels["pod-template-hash"]; h != "" && strings.HasSuffix(ref.Name, "-"+h) {
			return strings.TrimSuffix(ref.Name, "-"+h)
		}
	case "Job":
		if m := cronJobName.FindStringSubmatch(ref.Name); m != nil {
			return m[1]
		}
	}
	return ref.Name
}

// PodIPs returns the IPs a pod calls from, or nothing for pods that must not
// be indexed: host-network pods share the node's IP (every call from the node
// would be blamed on them) and finished pods may hand their IP to a new pod.
func PodIPs(pod *corev1.Pod) []netip.Addr {
	if pod.Spec.HostNetwork || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	var out []netip.Addr
	add := func(s string) {
		if a, err := netip.ParseAddr(s); err == nil && !slices.Contains(out, a.Unmap()) {
			out = append(out, a.Unmap())
		}
	}
	add(pod.Status.PodIP)
	for _, ip := range pod.Status.PodIPs {
		add(ip.IP)
	}
	return out
}

// podFacts is what the loop keeps per pod.
type podFacts struct {
	workload lazyxds.WorkloadKey
	labels   map[string]string
	ips      []netip.Addr
}

// aggregate merges a workload's pods: labels common to all of them (the
// Sidecar selector must match every replica, old and new ReplicaSet during a
// rollout) and every IP.
func aggregate(pods []podFacts) (map[string]string, []netip.Addr) {
	if len(pods) == 0 {
		return nil, nil
	}
	common := maps.Clone(pods[0].labels)
	var ips []netip.Addr
	for _, p := range pods {
		for k, v := range common {
			if pv, ok := p.labels[k]; !ok || pv != v {
				delete(common, k)
			}
		}
		ips = append(ips, p.ips...)
	}
	slices.SortFunc(ips, func(a, b netip.Addr) int { return a.Compare(b) })
	return common, slices.Compact(ips)
}

// ServiceFrom converts a Kubernetes Service. Ports are HTTP by Istio's rules
// (appProtocol, then name prefix); anything else keeps the service visible.
func ServiceFrom(svc *corev1.Service, domain string) lazyxds.Service {
	s := lazyxds.Service{Namespace: svc.Namespace, Host: svc.Name + "." + svc.Namespace + ".svc." + domain}
	for _, p := range svc.Spec.Ports {
		app := ""
		if p.AppProtocol != nil {
			app = *p.AppProtocol
		}
		s.Ports = append(s.Ports, lazyxds.Port{Number: uint32(p.Port), HTTP: p.Protocol != corev1.ProtocolUDP && lazyxds.IsHTTPProtocol(p.Name, app)})
	}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip); err == nil {
			s.Addresses = append(s.Addresses, a)
		}
	}
	return s
}

// ServiceEntryServices converts a ServiceEntry: one graph service per host.
func ServiceEntryServices(se *networkingv1.ServiceEntry) []lazyxds.Service {
	var ports []lazyxds.Port
	for _, p := range se.Spec.Ports {
		ports = append(ports, lazyxds.Port{Number: p.Number, HTTP: lazyxds.IsHTTPProtocol(p.Name, p.Protocol)})
	}
	var addrs []netip.Addr
	for _, a := range se.Spec.Addresses {
		if ip, err := netip.ParseAddr(a); err == nil {
			addrs = append(addrs, ip)
		}
	}
	out := make([]lazyxds.Service, 0, len(se.Spec.Hosts))
	for _, h := range se.Spec.Hosts {
		out = append(out, lazyxds.Service{Namespace: se.Namespace, Host: strings.ToLower(h), Ports: ports, Addresses: addrs, ServiceEntry: true})
	}
	return out
}

// VirtualServiceFrom converts a VirtualService: its hosts and every host it
// routes or mirrors to, so a caller of one of them also sees the others.
func VirtualServiceFrom(vs *networkingv1.VirtualService) lazyxds.VirtualService {
	out := lazyxds.VirtualService{Namespace: vs.Namespace, Name: vs.Name, Hosts: slices.Clone(vs.Spec.Hosts)}
	seen := map[string]bool{}
	add := func(d *networkingapi.Destination) {
		if d != nil && d.Host != "" && !seen[d.Host] {
			seen[d.Host] = true
			out.Destinations = append(out.Destinations, d.Host)
		}
	}
	for _, r := range vs.Spec.Http {
		for _, d := range r.Route {
			add(d.Destination)
		}
		add(r.Mirror)
		for _, m := range r.Mirrors {
			add(m.Destination)
		}
	}
	for _, r := range vs.Spec.Tcp {
		for _, d := range r.Route {
			add(d.Destination)
		}
	}
	for _, r := range vs.Spec.Tls {
		for _, d := range r.Route {
			add(d.Destination)
		}
	}
	sort.Strings(out.Destinations)
	return out
}

// policyScope says whether policy p may make a workload of namespace ns lazy.
func policyScope(p *v1alpha1.LazyXDS, ns, rootNS string) bool {
	if p.Namespace == ns {
		return ns != rootNS && ns != "kube-system"
	}
	return p.Namespace == rootNS && ns != "kube-system" && !slices.Contains(p.Spec.NeverLazyNamespaces, ns)
}

// ChoosePolicy picks the LazyXDS governing a workload: a policy of its own
// namespace before a root-namespace one (as Istio prefers namespace config to
// mesh config), then the oldest, then by name, so the choice is stable.
// Deleted policies are ignored. nil: the workload is not lazy.
func ChoosePolicy(policies []*v1alpha1.LazyXDS, ns string, wl map[string]string, rootNS string) *v1alpha1.LazyXDS {
	var best *v1alpha1.LazyXDS
	rank := func(p *v1alpha1.LazyXDS) int {
		if p.Namespace == ns {
			return 0
		}
		return 1
	}
	for _, p := range policies {
		if !p.DeletionTimestamp.IsZero() || !policyScope(p, ns, rootNS) {
			continue
		}
		if !labels.SelectorFromSet(p.Spec.Selector.MatchLabels).Matches(labels.Set(wl)) {
			continue
		}
		if best == nil || rank(p) < rank(best) ||
			rank(p) == rank(best) && (p.CreationTimestamp.Before(&best.CreationTimestamp) ||
				p.CreationTimestamp.Equal(&best.CreationTimestamp) && p.Name < best.Name) {
			best = p
		}
	}
	return best
}

// UserSidecarSelects reports whether a Sidecar not written by leanmesh scopes
// the workload through its workloadSelector. A namespace-wide Sidecar (no
// selector) does not count: Istio lets a selector-bearing Sidecar override it.
func UserSidecarSelects(sc *networkingv1.Sidecar, wl map[string]string) bool {
	if sc.Labels[v1alpha1.LabelManagedBy] == v1alpha1.ManagedBy {
		return false
	}
	sel := sc.Spec.GetWorkloadSelector().GetLabels()
	if len(sel) == 0 || len(wl) == 0 {
		return false
	}
	return labels.SelectorFromSet(sel).Matches(labels.Set(wl))
}

// EgressOf fills a policy's egress with the controller's settings.
func EgressOf(p *v1alpha1.LazyXDS, base lazyxds.Egress) lazyxds.Egress {
	eg := base
	if p.Spec.Egress.Namespace != "" {
		eg.Namespace = p.Spec.Egress.Namespace
	}
	if p.Spec.Egress.Name != "" {
		eg.Name = p.Spec.Egress.Name
	}
	return eg
}

// sidecarHosts adds a policy's own hosts (its egress, extraEgressHosts) to
// the graph's: they are per policy, the graph's options are global.
func sidecarHosts(in lazyxds.SidecarInput, p *v1alpha1.LazyXDS, eg lazyxds.Egress) []string {
	hosts := append(slices.Clone(in.Hosts), eg.SidecarHost())
	hosts = append(hosts, p.Spec.ExtraEgressHosts...)
	slices.Sort(hosts)
	return slices.Compact(hosts)
}
