package lazyxdsctl

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"strings"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/lazyxds"
	"github.com/leanmesh/leanmesh/controller/render"
)

// policyRuntime is what the flush loop remembers per policy for its status.
type policyRuntime struct {
	lastFlush    time.Time
	applyErr     string
	unselectable map[lazyxds.WorkloadKey]string
	written      *v1alpha1.LazyXDSStatus // last status written
}

func (l *Loop) run(key types.NamespacedName) *policyRuntime {
	r := l.policyRun[key]
	if r == nil {
		r = &policyRuntime{unselectable: map[lazyxds.WorkloadKey]string{}}
		l.policyRun[key] = r
	}
	return r
}

// flush is one tick: expire, drain, persist what the changes need, apply
// them, then the per-policy objects and status.
func (l *Loop) flush(ctx context.Context) {
	now := time.Now()
	l.scheduleSeeds(ctx, now)
	l.expireAndReap(now)
	changes := l.graph.Drain()
	need := false
	for _, ch := range changes {
		if !ch.Delete && !l.acknowledged(ch.Workload, ch.Input.Deps) {
			need = true
			break
		}
	}
	if need || now.Sub(l.lastPersist) >= l.opts.PersistInterval {
		if err := l.persist(ctx); err != nil {
			l.opts.Logger.Error(err, "persisting learned dependencies")
		}
	}
	var retry []lazyxds.WorkloadKey
	for _, ch := range changes {
		if !ch.Delete && l.seedGate(ch.Workload) {
			retry = append(retry, ch.Workload) // its policy's first seed is still running
			continue
		}
		if !l.applyChange(ctx, ch, now) {
			retry = append(retry, ch.Workload)
		}
	}
	if len(retry) > 0 {
		l.graph.Resync(retry...)
	}
	l.applyInfra(ctx)
	l.writeStatus(ctx)
}

// expireAndReap applies per-policy dependency expiry and forgets workloads
// whose pods have been gone for the grace period.
func (l *Loop) expireAndReap(now time.Time) {
	type exp struct {
		k      lazyxds.WorkloadKey
		cutoff time.Time
	}
	var expire []exp
	var gone []lazyxds.WorkloadKey
	l.mu.Lock()
	for k, ws := range l.workloads {
		if len(ws.pods) == 0 && !ws.emptySince.IsZero() && now.Sub(ws.emptySince) > l.opts.WorkloadGracePeriod {
			delete(l.workloads, k)
			gone = append(gone, k)
			continue
		}
		if !ws.lazy() {
			continue
		}
		if p := l.policies[ws.policy]; p != nil && p.Spec.DependencyExpiry != nil && p.Spec.DependencyExpiry.Duration > 0 {
			expire = append(expire, exp{k, now.Add(-p.Spec.DependencyExpiry.Duration)})
		}
	}
	if len(gone) > 0 {
		l.statusDirty = true
	}
	l.mu.Unlock()
	for _, k := range gone {
		l.graph.DeleteWorkload(k)
	}
	for _, e := range expire {
		l.graph.ExpireWorkload(e.k, e.cutoff)
	}
}

// applyChange writes or deletes one Sidecar. false: try again next flush
// (not yet acknowledged, or the write failed).
func (l *Loop) applyChange(ctx context.Context, ch lazyxds.SidecarChange, now time.Time) bool {
	k := ch.Workload
	l.mu.Lock()
	var p *v1alpha1.LazyXDS
	if ws := l.workloads[k]; ws != nil && ws.lazy() {
		p = l.policies[ws.policy]
	}
	l.mu.Unlock()
	if ch.Delete || p == nil {
		if err := l.deleteSidecar(ctx, k); err != nil {
			l.opts.Logger.Error(err, "deleting Sidecar", "workload", k.String())
			l.metrics.sidecar("failed")
			return false
		}
		delete(l.applied, k)
		return true
	}
	if !l.acknowledged(k, ch.Input.Deps) {
		return false // the snapshot write failed: never hand a proxy what a restart would forget
	}
	key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	run := l.run(key)
	in := ch.Input
	in.Hosts = sidecarHosts(in, p, EgressOf(p, l.egress))
	sc, err := lazyxds.RenderSidecar(in)
	var selErr *lazyxds.SelectorError
	if errors.As(err, &selErr) {
		// An unsafe selector would scope other workloads: write nothing, and
		// remove what an earlier, safe selector wrote.
		if _, seen := run.unselectable[k]; !seen {
			l.event(p, corev1.EventTypeWarning, v1alpha1.ReasonUnselectableWorkload, "Render", selErr.Error())
		}
		run.unselectable[k] = selErr.Reason
		l.markStatus()
		if err := l.deleteSidecar(ctx, k); err != nil {
			return false
		}
		delete(l.applied, k)
		return true // re-emitted by the graph when labels or peers change
	} else if err != nil {
		l.opts.Logger.Error(err, "rendering Sidecar", "workload", k.String())
		return true
	}
	if _, was := run.unselectable[k]; was {
		delete(run.unselectable, k)
		l.markStatus()
	}
	sc.Labels[v1alpha1.LabelComponent] = ComponentSidecar
	sc.Labels[v1alpha1.LabelLazyXDS] = p.Name
	sc.Labels[v1alpha1.LabelLazyXDSNamespace] = p.Namespace
	if p.Namespace == sc.Namespace {
		// Garbage collection when the policy goes while the controller is down.
		sc.OwnerReferences = []metav1.OwnerReference{ownerRef(p)}
	}
	if err := l.apply(ctx, sc); err != nil {
		l.opts.Logger.Error(err, "applying Sidecar", "workload", k.String())
		if run.applyErr == "" {
			l.event(p, corev1.EventTypeWarning, v1alpha1.ReasonSidecarApplyFailed, "Apply", err.Error())
		}
		run.applyErr = err.Error()
		l.metrics.sidecar("failed")
		l.markStatus()
		return false
	}
	l.metrics.sidecar("applied")
	prev := l.applied[k]
	cur := make(map[string]struct{}, len(in.Deps))
	for _, d := range in.Deps {
		cur[d.Host] = struct{}{}
		if _, had := prev[d.Host]; !had && d.FirstSeen.After(l.started) {
			// First log of this dependency → the Sidecar that carries it.
			l.metrics.learnToSidecar.Observe(now.Sub(d.FirstSeen).Seconds())
		}
	}
	l.applied[k] = cur
	run.lastFlush = now
	run.applyErr = ""
	l.markStatus()
	return true
}

func (l *Loop) markStatus() {
	l.mu.Lock()
	l.statusDirty = true
	l.mu.Unlock()
}

// deleteSidecar removes the workload's leanmesh Sidecar, never a user's.
func (l *Loop) deleteSidecar(ctx context.Context, k lazyxds.WorkloadKey) error {
	var sc networkingv1.Sidecar
	err := l.c.Get(ctx, client.ObjectKey{Namespace: k.Namespace, Name: lazyxds.SidecarNamePrefix + k.Name}, &sc)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if sc.Labels[v1alpha1.LabelComponent] != ComponentSidecar {
		return nil
	}
	if err := l.c.Delete(ctx, &sc); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	l.metrics.sidecar("deleted")
	return nil
}

func (l *Loop) apply(ctx context.Context, obj client.Object) error {
	u, err := render.Unstructured(obj)
	if err != nil {
		return err
	}
	return l.c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(v1alpha1.FieldOwner), client.ForceOwnership)
}

func ownerRef(p *v1alpha1.LazyXDS) metav1.OwnerReference {
	t := true
	return metav1.OwnerReference{
		APIVersion: v1alpha1.GroupVersion.String(), Kind: "LazyXDS", Name: p.Name, UID: p.UID,
		Controller: &t,
	}
}

func (l *Loop) event(p *v1alpha1.LazyXDS, typ, reason, action, msg string) {
	if l.opts.Recorder != nil {
		l.opts.Recorder.Eventf(p, nil, typ, reason, action, "%s", msg)
	}
}

// desiredInfra renders the redirect EnvoyFilters (one per namespaced policy,
// one per namespace for a root-namespace policy) and the egress objects (one
// set per distinct egress). Keys are "<Kind>/<ns>/<name>".
func (l *Loop) desiredInfra() map[string]client.Object {
	l.mu.Lock()
	policies := make([]*v1alpha1.LazyXDS, 0, len(l.policies))
	for _, p := range l.policies {
		if p.DeletionTimestamp.IsZero() {
			policies = append(policies, p)
		}
	}
	rootNS := map[types.NamespacedName]map[string]bool{}
	for k, ws := range l.workloads {
		if ws.lazy() && ws.policy.Namespace == l.opts.RootNamespace {
			if rootNS[ws.policy] == nil {
				rootNS[ws.policy] = map[string]bool{}
			}
			rootNS[ws.policy][k.Namespace] = true
		}
	}
	l.mu.Unlock()
	sort.Slice(policies, func(i, j int) bool {
		return policies[i].Namespace+"/"+policies[i].Name < policies[j].Namespace+"/"+policies[j].Name
	})
	out := map[string]client.Object{}
	if len(policies) == 0 {
		return out
	}
	namespaces, seHosts := l.graph.Namespaces(), l.graph.ServiceEntryHosts()
	egresses := map[string]lazyxds.Egress{}
	for _, p := range policies {
		eg := EgressOf(p, l.egress)
		egresses[eg.SidecarHost()] = eg
		targets := []string{p.Namespace}
		name := p.Name
		if p.Namespace == l.opts.RootNamespace {
			targets = sortedKeys(rootNS[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}])
			name = "mesh-" + p.Name
		}
		for _, ns := range targets {
			ef, err := lazyxds.RenderRedirect(lazyxds.RedirectInput{
				Namespace: ns, Policy: name, Selector: p.Spec.Selector.MatchLabels,
				Namespaces: namespaces, ServiceEntryHosts: seHosts,
			}, eg)
			if err != nil {
				l.opts.Logger.Error(err, "rendering redirect", "policy", p.Namespace+"/"+p.Name)
				continue
			}
			ef.Labels[v1alpha1.LabelComponent] = ComponentRedirect
			ef.Labels[v1alpha1.LabelLazyXDS] = p.Name
			ef.Labels[v1alpha1.LabelLazyXDSNamespace] = p.Namespace
			if ns == p.Namespace {
				ef.OwnerReferences = []metav1.OwnerReference{ownerRef(p)}
			}
			out["EnvoyFilter/"+ns+"/"+ef.Name] = ef
		}
	}
	ports := l.graph.HTTPPorts()
	for _, eg := range egresses {
		for _, o := range lazyxds.RenderEgress(eg, ports).Objects() {
			o.GetLabels()[v1alpha1.LabelComponent] = ComponentEgress
			out[infraKey(o)] = o
		}
	}
	l.desiredEgressRoutes(egresses, out)
	return out
}

// routingFacts summarise the egress-bound VirtualService copies for status.
type routingFacts struct {
	rendered int
	problems []string // "<ns>/<vs>: <why>", sorted
}

// desiredEgressRoutes adds the egress-bound copy of every VirtualService that
// routes a lazy host and records what cannot be copied.
func (l *Loop) desiredEgressRoutes(egresses map[string]lazyxds.Egress, out map[string]client.Object) {
	l.mu.Lock()
	vss := make([]*networkingv1.VirtualService, 0, len(l.vsObjects))
	for _, vs := range l.vsObjects {
		vss = append(vss, vs)
	}
	l.mu.Unlock()
	var egs []lazyxds.Egress
	for _, k := range sortedKeys(egresses) {
		egs = append(egs, egresses[k])
	}
	var facts routingFacts
	for _, vs := range vss {
		cp, problems := lazyxds.RenderEgressRoutes(lazyxds.EgressRoutesInput{
			VirtualService: vs, Egresses: egs, LazyPorts: l.graph.LazyPorts, ClusterDomain: l.opts.ClusterDomain,
		})
		facts.problems = append(facts.problems, problems...)
		if cp == nil {
			continue
		}
		cp.Labels[v1alpha1.LabelComponent] = ComponentEgressRoutes
		out[infraKey(cp)] = cp
		facts.rendered++
	}
	sort.Strings(facts.problems)
	if facts.rendered != l.routing.rendered || !slices.Equal(facts.problems, l.routing.problems) {
		l.routing = facts
		l.markStatus()
	}
}

// infraKey is "<Kind>/<ns>/<name>"; every rendered object carries its TypeMeta.
func infraKey(o client.Object) string {
	return o.GetObjectKind().GroupVersionKind().Kind + "/" + o.GetNamespace() + "/" + o.GetName()
}

// applyInfra converges redirects and egress objects when their inputs may
// have changed, writing only objects whose rendering differs from the last
// write, and deleting the ones no longer wanted.
func (l *Loop) applyInfra(ctx context.Context) {
	l.mu.Lock()
	dirty := l.infraDirty
	l.infraDirty = false
	l.mu.Unlock()
	if !dirty {
		return
	}
	failed := false
	desired := l.desiredInfra()
	for _, key := range sortedKeys(desired) {
		o := desired[key]
		u, err := render.Unstructured(o)
		if err != nil {
			continue
		}
		b, _ := json.Marshal(u.Object)
		if prev, ok := l.infraApplied[key]; ok && prev.rendered == string(b) {
			continue
		}
		if err := l.c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(v1alpha1.FieldOwner), client.ForceOwnership); err != nil {
			l.opts.Logger.Error(err, "applying lazy-xDS object", "object", key)
			failed = true
			continue
		}
		l.infraApplied[key] = infraObject{rendered: string(b), gvk: u.GroupVersionKind()}
	}
	for _, key := range sortedKeys(l.infraApplied) {
		if _, want := desired[key]; want {
			continue
		}
		prev := l.infraApplied[key]
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(prev.gvk)
		parts := strings.SplitN(key, "/", 3)
		u.SetNamespace(parts[1])
		u.SetName(parts[2])
		if err := l.c.Delete(ctx, u); err != nil && !apierrors.IsNotFound(err) {
			l.opts.Logger.Error(err, "deleting lazy-xDS object", "object", key)
			failed = true
			continue
		}
		delete(l.infraApplied, key)
	}
	if failed {
		l.mu.Lock()
		l.infraDirty = true
		l.mu.Unlock()
	}
}

type infraObject struct {
	rendered string // JSON last applied; "" for objects found at start
	gvk      schema.GroupVersionKind
}

// collectGarbage runs once after the informers synced: our Sidecars whose
// workload is no longer lazy are deleted (Drain only reports deletions of
// what this process emitted), and existing redirect/egress objects are
// recorded so applyInfra deletes the ones no policy wants.
func (l *Loop) collectGarbage(ctx context.Context) error {
	var scs networkingv1.SidecarList
	if err := l.c.List(ctx, &scs, client.MatchingLabels{v1alpha1.LabelComponent: ComponentSidecar}); err != nil {
		return err
	}
	for i := range scs.Items {
		sc := scs.Items[i]
		k := lazyxds.WorkloadKey{Namespace: sc.Namespace, Name: sc.Name[len(lazyxds.SidecarNamePrefix):]}
		l.mu.Lock()
		ws := l.workloads[k]
		keep := ws != nil && ws.lazy()
		l.mu.Unlock()
		if !keep {
			if err := l.c.Delete(ctx, sc); err != nil && !apierrors.IsNotFound(err) {
				return err
			}
			l.metrics.sidecar("deleted")
		}
	}
	// EnvoyFilters and VirtualServices are also written in workload
	// namespaces, and Services are read everywhere: listed cluster-wide. The
	// egress-only kinds are listed where the egress may live (the chart
	// grants them there only).
	egressNamespaces := l.opts.EgressNamespaces
	if len(egressNamespaces) == 0 {
		egressNamespaces = []string{metav1.NamespaceAll}
	}
	for _, kind := range []struct {
		gvk        schema.GroupVersionKind
		namespaces []string
	}{
		{networkingv1alpha3.SchemeGroupVersion.WithKind("EnvoyFilter"), []string{metav1.NamespaceAll}},
		{corev1.SchemeGroupVersion.WithKind("ServiceAccount"), egressNamespaces},
		{appsv1.SchemeGroupVersion.WithKind("Deployment"), egressNamespaces},
		{corev1.SchemeGroupVersion.WithKind("Service"), []string{metav1.NamespaceAll}},
		{networkingv1.SchemeGroupVersion.WithKind("Gateway"), egressNamespaces},
		{networkingv1.SchemeGroupVersion.WithKind("VirtualService"), []string{metav1.NamespaceAll}},
	} {
		gvk := kind.gvk
		for _, ns := range kind.namespaces {
			list := &metav1.PartialObjectMetadataList{}
			list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
			sel := client.MatchingLabels{v1alpha1.LabelManagedBy: v1alpha1.ManagedBy}
			if err := l.api.List(ctx, list, sel, client.HasLabels{v1alpha1.LabelComponent}, client.InNamespace(ns)); err != nil {
				return err
			}
			for _, o := range list.Items {
				if c := o.Labels[v1alpha1.LabelComponent]; c != ComponentRedirect && c != ComponentEgress && c != ComponentEgressRoutes {
					continue
				}
				l.infraApplied[gvk.Kind+"/"+o.Namespace+"/"+o.Name] = infraObject{gvk: gvk}
			}
		}
	}
	l.mu.Lock()
	l.infraDirty = true
	l.mu.Unlock()
	return nil
}
