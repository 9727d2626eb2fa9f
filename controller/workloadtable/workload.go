// Package workloadtable is the controller side of the workload stream
// (filters/workloads/PROTOCOL.md): it watches Pods (and optionally Istio
// WorkloadEntries), turns each into address → workload entries with a pure
// function (this file), keeps them in a go-control-plane linear cache
// (index.go) and serves them as delta xDS to authenticated proxies
// (server.go). Setup (service.go) wires it into a controller-runtime manager.
package workloadtable

import (
	"net/netip"
	"regexp"
	"strings"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leanmesh/leanmesh/filters/peer"
	"github.com/leanmesh/leanmesh/filters/workloads"
)

// The label keys Istio's telemetry reads are peer's (the package owning the
// exchanged metadata); this one only names the workload.
const labelPodTemplateHash = "pod-template-hash"

// cronJobName is Istio's pattern for Jobs created by a CronJob
// (pkg/kube GetDeployMetaFromPod): <cronjob>-<scheduled time in minutes>.
var cronJobName = regexp.MustCompile(`^(.+)-\d{8,10}$`)

// FromPod returns the addresses and workload of a pod; ok is false for pods
// that must not be in the table: no IP yet, host network (the node's IP is
// shared by many pods), or finished (the IP may already be reused).
func FromPod(pod *corev1.Pod, clusterID string) (ips []string, w workloads.Workload, ok bool) {
	if pod.Spec.HostNetwork || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil, w, false
	}
	for _, p := range pod.Status.PodIPs {
		ips = appendIP(ips, p.IP)
	}
	if len(ips) == 0 {
		ips = appendIP(ips, pod.Status.PodIP)
	}
	if len(ips) == 0 {
		return nil, w, false
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	return ips, identity(workloadName(pod), pod.Namespace, pod.Labels, clusterID, sa), true
}

// FromWorkloadEntry does the same for a WorkloadEntry (VMs): only entries
// whose address is an IP literal; the workload is the owning WorkloadGroup,
// else the entry itself.
func FromWorkloadEntry(we *networkingv1.WorkloadEntry, clusterID string) (ips []string, w workloads.Workload, ok bool) {
	ips = appendIP(nil, we.Spec.GetAddress())
	if len(ips) == 0 {
		return nil, w, false
	}
	name := we.Name
	if ref := metav1.GetControllerOf(we); ref != nil && ref.Kind == "WorkloadGroup" {
		name = ref.Name
	}
	sa := we.Spec.GetServiceAccount()
	if sa == "" {
		sa = "default"
	}
	labels := we.Spec.GetLabels()
	if len(labels) == 0 {
		labels = we.Labels
	}
	return ips, identity(name, we.Namespace, labels, clusterID, sa), true
}

func identity(name, namespace string, labels map[string]string, clusterID, sa string) workloads.Workload {
	return workloads.Workload{
		Name:              name,
		Namespace:         namespace,
		CanonicalService:  first(labels[peer.LabelCanonicalName], labels[peer.LabelK8sName], labels[peer.LabelApp], name),
		CanonicalRevision: first(labels[peer.LabelCanonicalRevision], labels[peer.LabelK8sVersion], labels[peer.LabelVersion], "latest"),
		App:               first(labels[peer.LabelK8sName], labels[peer.LabelApp]),
		Version:           first(labels[peer.LabelK8sVersion], labels[peer.LabelVersion]),
		Cluster:           clusterID,
		ServiceAccount:    sa,
	}
}

// workloadName follows Istio's owner heuristics without extra API reads: a
// ReplicaSet named <deployment>-<pod-template-hash> stands for its
// Deployment, a Job named <cronjob>-<digits> for its CronJob.
func workloadName(pod *corev1.Pod) string {
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		return pod.Name
	}
	switch ref.Kind {
	case "ReplicaSet":
		if h := pod.Labels[labelPodTemplateHash]; h != "" && strings.HasSuffix(ref.Name, "-"+h) {
			return strings.TrimSuffix(ref.Name, "-"+h)
		}
	case "Job":
		if m := cronJobName.FindStringSubmatch(ref.Name); m != nil {
			return m[1]
		}
	}
	return ref.Name
}

func appendIP(ips []string, s string) []string {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return ips
	}
	return append(ips, a.Unmap().String())
}

func first(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
