package cluster

import (
	"context"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// Port is one service port of a Workload.
type Port struct {
	// Name decides Istio's protocol when AppProtocol is empty
	// ("http", "http-x", "grpc", "tcp"...).
	Name        string
	Port        int32
	TargetPort  int32 // default: Port
	Protocol    corev1.Protocol
	AppProtocol string
}

// Workload describes a Service backed by a single Pod, written as API objects
// (Service, EndpointSlice, Pod with status) because no kubelet or endpoint
// controller runs.
type Workload struct {
	Namespace string
	// Name is the Service name and the "app" label default.
	Name string
	// PodName defaults to Name+"-0".
	PodName string
	// IP is the pod IP (status.podIP); sidecars connect with it in their node id.
	IP string
	// Labels on the pod (and the Service selector). Default {"app": Name}.
	Labels         map[string]string
	Ports          []Port
	ServiceAccount string // default "default"
}

func (w Workload) withDefaults() Workload {
	if w.PodName == "" {
		w.PodName = w.Name + "-0"
	}
	if len(w.Labels) == 0 {
		w.Labels = map[string]string{"app": w.Name}
	}
	if w.ServiceAccount == "" {
		w.ServiceAccount = "default"
	}
	ports := make([]Port, len(w.Ports))
	for i, p := range w.Ports {
		if p.TargetPort == 0 {
			p.TargetPort = p.Port
		}
		if p.Protocol == "" {
			p.Protocol = corev1.ProtocolTCP
		}
		ports[i] = p
	}
	w.Ports = ports
	return w
}

// Host is the workload's Service FQDN.
func (w Workload) Host() string {
	return fmt.Sprintf("%s.%s.svc.cluster.local", w.Name, w.Namespace)
}

// OutboundCluster is the name istiod gives the outbound cluster for port.
func (w Workload) OutboundCluster(port int32) string {
	return fmt.Sprintf("outbound|%d||%s", port, w.Host())
}

// WorkloadObjects are the API objects CreateWorkload wrote.
type WorkloadObjects struct {
	Workload      Workload // with defaults applied
	Service       *corev1.Service
	EndpointSlice *discoveryv1.EndpointSlice
	Pod           *corev1.Pod
}

// CreateNamespace creates a namespace; an existing one is fine.
func (e *Env) CreateNamespace(ctx context.Context, name string, labels map[string]string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := e.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}

// CreateWorkload writes a Service, a Running Pod with w.IP (status set via
// the status subresource) and a ready EndpointSlice pointing at it.
func (e *Env) CreateWorkload(ctx context.Context, w Workload) (*WorkloadObjects, error) {
	w = w.withDefaults()
	if w.Namespace == "" || w.Name == "" || w.IP == "" {
		return nil, fmt.Errorf("workload needs Namespace, Name and IP: %+v", w)
	}
	var (
		svcPorts   []corev1.ServicePort
		ctrPorts   []corev1.ContainerPort
		slicePorts []discoveryv1.EndpointPort
	)
	for _, p := range w.Ports {
		sp := corev1.ServicePort{Name: p.Name, Port: p.Port, TargetPort: intstr.FromInt32(p.TargetPort), Protocol: p.Protocol}
		if p.AppProtocol != "" {
			sp.AppProtocol = ptr.To(p.AppProtocol)
		}
		svcPorts = append(svcPorts, sp)
		ctrPorts = append(ctrPorts, corev1.ContainerPort{Name: truncate(p.Name, 15), ContainerPort: p.TargetPort, Protocol: p.Protocol})
		slicePorts = append(slicePorts, discoveryv1.EndpointPort{
			Name: ptr.To(p.Name), Port: ptr.To(p.TargetPort), Protocol: ptr.To(p.Protocol), AppProtocol: sp.AppProtocol,
		})
	}

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.Namespace, Name: w.Name, Labels: maps.Clone(w.Labels)},
		Spec:       corev1.ServiceSpec{Selector: maps.Clone(w.Labels), Ports: svcPorts, Type: corev1.ServiceTypeClusterIP},
	}
	if err := e.Client.Create(ctx, svc); err != nil {
		return nil, fmt.Errorf("create service %s/%s: %w", w.Namespace, w.Name, err)
	}

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.Namespace, Name: w.PodName, Labels: maps.Clone(w.Labels)},
		Spec: corev1.PodSpec{
			ServiceAccountName: w.ServiceAccount,
			NodeName:           "local", // scheduled, so nothing treats it as pending
			Containers: []corev1.Container{{
				Name:  "app",
				Image: "leanmesh.invalid/" + w.Name, // never pulled: no kubelet
				Ports: ctrPorts,
			}},
		},
	}
	if err := e.Client.Create(ctx, pod); err != nil {
		return nil, fmt.Errorf("create pod %s/%s: %w", w.Namespace, w.PodName, err)
	}
	now := metav1.NewTime(time.Now())
	pod.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		PodIP:     w.IP,
		PodIPs:    []corev1.PodIP{{IP: w.IP}},
		HostIP:    "127.0.0.1",
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: "app", Image: "leanmesh.invalid/" + w.Name, Ready: true, Started: ptr.To(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}},
	}
	if err := e.Client.Status().Update(ctx, pod); err != nil {
		return nil, fmt.Errorf("set pod %s/%s status: %w", w.Namespace, w.PodName, err)
	}

	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: w.Namespace,
			Name:      w.Name + "-" + w.PodName,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: w.Name,
				discoveryv1.LabelManagedBy:   "e2e.leanmesh.io",
			},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{w.IP},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
			NodeName:   ptr.To("local"),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: w.Namespace, Name: w.PodName, UID: pod.UID},
		}},
		Ports: slicePorts,
	}
	if err := e.Client.Create(ctx, slice); err != nil {
		return nil, fmt.Errorf("create endpointslice %s/%s: %w", w.Namespace, slice.Name, err)
	}
	return &WorkloadObjects{Workload: w, Service: svc, EndpointSlice: slice, Pod: pod}, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
