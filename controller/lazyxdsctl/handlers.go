package lazyxdsctl

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/lazyxds"
)

// Informer handlers. They run on the informers' goroutines, update the
// loop's indexes under l.mu and feed the graph, which only marks workloads
// dirty: all writes to the cluster happen in flush.

func (l *Loop) onPod(obj any, deleted bool) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	key := types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}
	finished := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
	l.mu.Lock()
	defer l.mu.Unlock()
	old, had := l.pods[key]
	if deleted || finished {
		if had {
			delete(l.pods, key)
			l.removePodLocked(old, pod.Name)
		}
		return
	}
	f := podFacts{
		workload: lazyxds.WorkloadKey{Namespace: pod.Namespace, Name: WorkloadName(pod)},
		labels:   pod.Labels,
		ips:      PodIPs(pod),
	}
	if had && old.workload != f.workload {
		l.removePodLocked(old, pod.Name)
	}
	l.pods[key] = f
	ws := l.workloads[f.workload]
	if ws == nil {
		ws = &wlState{pods: map[string]podFacts{}}
		l.workloads[f.workload] = ws
	}
	ws.pods[pod.Name] = f
	l.refreshWorkloadLocked(f.workload, ws)
}

func (l *Loop) removePodLocked(f podFacts, podName string) {
	ws := l.workloads[f.workload]
	if ws == nil {
		return
	}
	delete(ws.pods, podName)
	l.refreshWorkloadLocked(f.workload, ws)
}

// refreshWorkloadLocked recomputes a workload from its pods and pushes it to
// the graph. A workload whose last pod went keeps its labels, dependencies and
// Sidecar for the grace period (flush deletes it after that).
func (l *Loop) refreshWorkloadLocked(k lazyxds.WorkloadKey, ws *wlState) {
	if len(ws.pods) == 0 {
		if ws.emptySince.IsZero() {
			ws.emptySince = time.Now()
		}
		l.graph.UpsertWorkload(lazyxds.Workload{Namespace: k.Namespace, Name: k.Name, Labels: ws.labels, Lazy: ws.lazy()})
		return
	}
	ws.emptySince = time.Time{}
	pods := make([]podFacts, 0, len(ws.pods))
	for _, name := range sortedKeys(ws.pods) {
		pods = append(pods, ws.pods[name])
	}
	labels, addrs := aggregate(pods)
	ws.labels = labels
	l.assignLocked(k, ws)
	l.graph.UpsertWorkload(lazyxds.Workload{Namespace: k.Namespace, Name: k.Name, Labels: labels, IPs: addrs, Lazy: ws.lazy()})
}

// assignLocked chooses the workload's policy and looks for a user Sidecar
// that already scopes it. A change of either re-renders its Sidecar: the
// policy's own hosts are not part of the graph's fingerprint.
func (l *Loop) assignLocked(k lazyxds.WorkloadKey, ws *wlState) {
	var list []*v1alpha1.LazyXDS
	for _, p := range l.policies {
		if p.Namespace == k.Namespace || p.Namespace == l.opts.RootNamespace {
			list = append(list, p)
		}
	}
	var policy types.NamespacedName
	if p := ChoosePolicy(list, k.Namespace, ws.labels, l.opts.RootNamespace); p != nil {
		policy = types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	}
	conflict := ""
	if policy.Name != "" {
		ours := lazyxds.SidecarNamePrefix + k.Name
		for _, name := range sortedKeys(l.userSidecars[k.Namespace]) {
			sc := l.userSidecars[k.Namespace][name]
			if name == ours || UserSidecarSelects(sc, ws.labels) {
				conflict = name
				break
			}
		}
	}
	if policy == ws.policy && conflict == ws.conflict {
		return
	}
	wasLazy := ws.lazy()
	ws.policy, ws.conflict = policy, conflict
	l.statusDirty = true
	if wasLazy && ws.lazy() {
		// Same graph input, other policy hosts. (A flip of Lazy needs no
		// Resync: the caller's UpsertWorkload makes Drain write or delete,
		// and a Resync would make it forget the Sidecar it must delete.)
		l.graph.Resync(k)
	}
}

// reassignLocked re-evaluates every workload of ns ("" = all namespaces).
func (l *Loop) reassignLocked(ns string) {
	for k, ws := range l.workloads {
		if ns != "" && k.Namespace != ns {
			continue
		}
		before := ws.lazy()
		l.assignLocked(k, ws)
		if ws.lazy() != before {
			l.graph.UpsertWorkload(lazyxds.Workload{Namespace: k.Namespace, Name: k.Name, Labels: ws.labels, IPs: workloadIPs(ws), Lazy: ws.lazy()})
		}
	}
}

func workloadIPs(ws *wlState) []netip.Addr {
	pods := make([]podFacts, 0, len(ws.pods))
	for _, p := range ws.pods {
		pods = append(pods, p)
	}
	_, ips := aggregate(pods)
	return ips
}

func (l *Loop) onPolicy(obj any, deleted bool) {
	p, ok := obj.(*v1alpha1.LazyXDS)
	if !ok {
		return
	}
	key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.policies[key]
	if !deleted && l.egressRefusal(p) != "" {
		// Not applied: its status says why. If it was in force (the
		// namespace changed), it is undone as on deletion.
		l.refused[key], l.statusDirty = p, true
		if old == nil {
			return
		}
		deleted = true
	} else {
		delete(l.refused, key)
	}
	if deleted {
		delete(l.policies, key)
	} else {
		l.policies[key] = p
		// Our own status writes come back as updates: nothing to redo.
		if old != nil && old.Generation == p.Generation && old.DeletionTimestamp.Equal(p.DeletionTimestamp) {
			return
		}
	}
	l.infraDirty, l.statusDirty = true, true
	scope := p.Namespace
	if scope == l.opts.RootNamespace {
		scope = ""
	}
	l.reassignLocked(scope)
	// Spec changes (extra hosts, egress) re-render the policy's Sidecars.
	for k, ws := range l.workloads {
		if ws.policy == key {
			l.graph.Resync(k)
		}
	}
}

func (l *Loop) onSidecar(obj any, deleted bool) {
	sc, ok := obj.(*networkingv1.Sidecar)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if sc.Labels[v1alpha1.LabelComponent] == ComponentSidecar && sc.Labels[v1alpha1.LabelManagedBy] == v1alpha1.ManagedBy {
		// Ours: if someone deletes it while its workload is lazy, write it again.
		if deleted {
			k := lazyxds.WorkloadKey{Namespace: sc.Namespace, Name: strings.TrimPrefix(sc.Name, lazyxds.SidecarNamePrefix)}
			if ws := l.workloads[k]; ws != nil && ws.lazy() {
				l.graph.Resync(k)
			}
		}
		return
	}
	m := l.userSidecars[sc.Namespace]
	if deleted {
		delete(m, sc.Name)
		if len(m) == 0 {
			delete(l.userSidecars, sc.Namespace)
		}
	} else {
		if m == nil {
			m = map[string]*networkingv1.Sidecar{}
			l.userSidecars[sc.Namespace] = m
		}
		m[sc.Name] = sc
	}
	l.reassignLocked(sc.Namespace)
}

func (l *Loop) onService(obj any, deleted bool) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return
	}
	s := ServiceFrom(svc, l.opts.ClusterDomain)
	if deleted {
		l.graph.DeleteService(s.Host)
	} else {
		l.graph.UpsertService(s)
	}
	l.mu.Lock()
	l.infraDirty = true
	l.mu.Unlock()
}

// onServiceEntry keeps, per host, every ServiceEntry declaring it: a host
// leaves the graph only when the last one goes.
func (l *Loop) onServiceEntry(obj any, deleted bool) {
	se, ok := obj.(*networkingv1.ServiceEntry)
	if !ok {
		return
	}
	key := types.NamespacedName{Namespace: se.Namespace, Name: se.Name}
	var cur []lazyxds.Service
	if !deleted {
		cur = ServiceEntryServices(se)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.infraDirty = true
	var hosts []string
	for _, s := range cur {
		hosts = append(hosts, s.Host)
		m := l.seByHost[s.Host]
		if m == nil {
			m = map[types.NamespacedName]lazyxds.Service{}
			l.seByHost[s.Host] = m
		}
		m[key] = s
		l.graph.UpsertService(s)
	}
	for _, h := range l.seHosts[key] {
		if slices.Contains(hosts, h) {
			continue
		}
		m := l.seByHost[h]
		delete(m, key)
		if len(m) == 0 {
			delete(l.seByHost, h)
			l.graph.DeleteService(h)
		} else {
			for _, other := range sortedKeysNN(m) {
				l.graph.UpsertService(m[other])
				break
			}
		}
	}
	if deleted {
		delete(l.seHosts, key)
	} else {
		l.seHosts[key] = hosts
	}
}

func (l *Loop) onVirtualService(obj any, deleted bool) {
	vs, ok := obj.(*networkingv1.VirtualService)
	if !ok {
		return
	}
	key := types.NamespacedName{Namespace: vs.Namespace, Name: vs.Name}
	l.mu.Lock()
	if deleted {
		delete(l.vsObjects, key)
	} else {
		l.vsObjects[key] = vs
	}
	l.infraDirty = true // its egress-bound copy
	l.mu.Unlock()
	if vs.Labels[v1alpha1.LabelManagedBy] == v1alpha1.ManagedBy {
		return // ours (the egress's default route, the copies): no visibility to add
	}
	if deleted {
		l.graph.DeleteVirtualService(vs.Namespace, vs.Name)
		return
	}
	l.graph.UpsertVirtualService(VirtualServiceFrom(vs))
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func sortedKeysNN[V any](m map[types.NamespacedName]V) []types.NamespacedName {
	out := make([]types.NamespacedName, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b types.NamespacedName) int { return strings.Compare(a.String(), b.String()) })
	return out
}
