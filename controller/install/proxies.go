package install

import (
	"context"
	"fmt"
	"regexp"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/proxystatus"
	"github.com/leanmesh/leanmesh/controller/release"
)

// ProxyView is istiod's view of connected proxies (proxystatus.Poller).
type ProxyView interface {
	Lookup(ns, pod string) (proxystatus.Proxy, bool)
	Known() (bool, error)
}

// proxyEvents turns the poller's changes into reconcile requests for the
// policies in reach of each changed pod's namespace.
func (r *Reconciler) proxyEvents(ctx context.Context, o client.Object) []reconcile.Request {
	return r.policiesIn(ctx, o.GetNamespace(), nil)
}

// proxyChanges adapts Poller.OnChange to a channel source.
func proxyChanges(ch chan<- event.GenericEvent) func([]proxystatus.Proxy) {
	return func(changed []proxystatus.Proxy) {
		seen := map[string]bool{}
		for _, px := range changed {
			if seen[px.Namespace] {
				continue
			}
			seen[px.Namespace] = true
			pod := &metav1.PartialObjectMetadata{}
			pod.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Pod"))
			pod.Namespace, pod.Name = px.Namespace, px.Pod
			ch <- event.GenericEvent{Object: pod}
		}
	}
}

// rejection is one pod whose proxy NACKed a listener update that mentions
// leanmesh.
type rejection struct {
	ns, pod, istiod, msg string
}

// acceptance sets ConfigAccepted from istiod's view of the pods the policy
// configures: False when one of them NACKed a listener update mentioning
// leanmesh (the update is not in effect on that proxy; Envoy keeps its last
// accepted listeners), with an event and the rejection gauge.
func (r *Reconciler) acceptance(p *v1alpha1.TelemetryPolicy, st *statusUpdate, configured []metav1.PartialObjectMetadata) {
	set := func(status metav1.ConditionStatus, reason, msg string) {
		v1alpha1.SetCondition(&st.s.Conditions, p.Generation, v1alpha1.ConditionConfigAccepted, status, reason, msg)
	}
	if r.Proxies == nil {
		set(metav1.ConditionUnknown, v1alpha1.ReasonUnknown, "istiod's proxy status is not read (controller flag --istiod-debug-url unset)")
		r.Metrics.setRejected(p.Namespace, p.Name, 0)
		return
	}
	if known, err := r.Proxies.Known(); !known {
		msg := "istiod's proxy status not read yet"
		if err != nil {
			msg += ": " + err.Error()
		}
		set(metav1.ConditionUnknown, v1alpha1.ReasonUnknown, msg)
		return
	}
	var rejected []rejection
	connected, acked := 0, 0
	for _, pod := range configured {
		px, ok := r.Proxies.Lookup(pod.Namespace, pod.Name)
		if !ok {
			continue
		}
		connected++
		switch {
		case px.Rejected() && proxystatus.MentionsLeanmesh(px.ListenerError):
			rejected = append(rejected, rejection{pod.Namespace, pod.Name, px.Istiod, px.ListenerError})
		case px.ACKState() == "ACKED":
			acked++
		}
	}
	r.Metrics.setRejected(p.Namespace, p.Name, len(rejected))
	if len(rejected) == 0 {
		set(metav1.ConditionTrue, v1alpha1.ReasonAccepted, fmt.Sprintf("no selected proxy rejected a listener update mentioning leanmesh (%d connected to istiod, %d of them ACKed their last listener push)", connected, acked))
		return
	}
	sort.Slice(rejected, func(i, j int) bool {
		return rejected[i].ns+"/"+rejected[i].pod < rejected[j].ns+"/"+rejected[j].pod
	})
	pods := make([]string, len(rejected))
	for i, x := range rejected {
		pods[i] = x.ns + "/" + x.pod
	}
	msg := fmt.Sprintf("%d proxy(ies) rejected (NACKed) the listener update; they keep their last accepted listeners: %s; first error: %s",
		len(rejected), joinMax(pods, 5), rejected[0].msg)
	old := meta.FindStatusCondition(st.old.Conditions, v1alpha1.ConditionConfigAccepted)
	set(metav1.ConditionFalse, v1alpha1.ReasonRejected, msg)
	if cur := meta.FindStatusCondition(st.s.Conditions, v1alpha1.ConditionConfigAccepted); old == nil || old.Status != metav1.ConditionFalse || old.Message != cur.Message {
		r.Recorder.Eventf(p, nil, corev1.EventTypeWarning, v1alpha1.ReasonRejected, "ProxyStatus", "%s", truncate(msg, 1024))
	}
}

// versions sets ProxyVersionMatch and status.proxyVersionSkew from the
// Istio version each configured pod's proxy reports to istiod. The
// EnvoyFilters that insert leanmesh and those patches that remove Istio's
// stats carry the same proxyVersion match, so a pod outside it keeps
// Istio's telemetry (no blackout), but it is not on leanmesh: reported.
func (r *Reconciler) versions(p *v1alpha1.TelemetryPolicy, st *statusUpdate, configured []metav1.PartialObjectMetadata, proxyVersion string) {
	set := func(status metav1.ConditionStatus, reason, msg string) {
		v1alpha1.SetCondition(&st.s.Conditions, p.Generation, v1alpha1.ConditionProxyVersionMatch, status, reason, msg)
	}
	if r.Proxies == nil {
		st.s.ProxyVersionSkew = nil
		set(metav1.ConditionUnknown, v1alpha1.ReasonUnknown, "istiod's proxy status is not read (controller flag --istiod-debug-url unset)")
		return
	}
	if known, _ := r.Proxies.Known(); !known {
		set(metav1.ConditionUnknown, v1alpha1.ReasonUnknown, "istiod's proxy status not read yet")
		return
	}
	re, err := regexp.Compile(proxyVersion)
	if err != nil { // validated before render; keep the last status
		return
	}
	type key struct{ ns, name, ver string }
	counts := map[key]int32{}
	for _, pod := range configured {
		px, ok := r.Proxies.Lookup(pod.Namespace, pod.Name)
		if !ok || re.MatchString(px.IstioVersion) {
			continue
		}
		counts[key{pod.Namespace, workloadName(pod.Name, pod.Labels), px.IstioVersion}]++
	}
	var skew []v1alpha1.WorkloadRef
	for k, n := range counts {
		skew = append(skew, v1alpha1.WorkloadRef{Namespace: k.ns, Name: k.name, Pods: n, ProxyVersion: k.ver})
	}
	skew = sortedCapped(skew)
	changed := !equality.Semantic.DeepEqual(skew, st.old.ProxyVersionSkew)
	st.s.ProxyVersionSkew = skew
	r.Metrics.setSkew(p.Namespace, p.Name, countPods(skew))
	if len(skew) == 0 {
		set(metav1.ConditionTrue, v1alpha1.ReasonProxyVersionMatch, fmt.Sprintf("every configured proxy connected to istiod reports an Istio version matching %s", proxyVersion))
		return
	}
	ws := make([]string, len(skew))
	for i, w := range skew {
		ws[i] = fmt.Sprintf("%s/%s (Istio %s)", w.Namespace, w.Name, w.ProxyVersion)
	}
	msg := fmt.Sprintf("%d pod(s) carry the library label but their proxy's Istio version is outside %s: leanmesh's filter does not apply to them and they keep Istio's own telemetry; label them with the library for their Envoy and set spec.istioRelease: %s",
		countPods(skew), proxyVersion, joinMax(ws, 5))
	set(metav1.ConditionFalse, v1alpha1.ReasonProxyVersionSkew, msg)
	if changed {
		r.Recorder.Eventf(p, nil, corev1.EventTypeWarning, v1alpha1.ReasonProxyVersionSkew, "ProxyStatus", "%s", truncate(msg, 1024))
	}
}

// proxyVersionOf is the proxyVersion match the rendered patches carry
// (render: spec.proxyVersion, else the release's minor).
func proxyVersionOf(spec v1alpha1.TelemetryPolicySpec, rel release.Release) string {
	if spec.ProxyVersion != "" {
		return spec.ProxyVersion
	}
	return rel.ProxyVersionRegex()
}
