package workloadtable

import (
	"reflect"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"
	apinetworkingv1 "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leanmesh/leanmesh/filters/peer"
	"github.com/leanmesh/leanmesh/filters/workloads"
)

func owned(kind, name string) []metav1.OwnerReference {
	t := true
	return []metav1.OwnerReference{{Kind: kind, Name: name, Controller: &t, APIVersion: "apps/v1"}}
}

func TestFromPod(t *testing.T) {
	running := corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.7", PodIPs: []corev1.PodIP{{IP: "10.244.0.7"}}}
	cases := []struct {
		name    string
		pod     corev1.Pod
		wantIPs []string
		want    workloads.Workload
		wantOK  bool
	}{
		{
			name: "deployment pod with istio canonical labels",
			pod: corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "reviews-v2-7d9f8b-x2x", Namespace: "shop",
					OwnerReferences: owned("ReplicaSet", "reviews-v2-7d9f8b"),
					Labels: map[string]string{"pod-template-hash": "7d9f8b", "app": "reviews", "version": "v2",
						peer.LabelCanonicalName: "reviews-svc", peer.LabelCanonicalRevision: "r2"}},
				Spec:   corev1.PodSpec{ServiceAccountName: "bookinfo-reviews"},
				Status: running,
			},
			wantIPs: []string{"10.244.0.7"}, wantOK: true,
			want: workloads.Workload{Name: "reviews-v2", Namespace: "shop", CanonicalService: "reviews-svc", CanonicalRevision: "r2",
				App: "reviews", Version: "v2", Cluster: "c1", ServiceAccount: "bookinfo-reviews"},
		},
		{
			name: "app.kubernetes.io labels win over app/version",
			pod: corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: "data", OwnerReferences: owned("StatefulSet", "db"),
					Labels: map[string]string{"app": "x", "version": "1", peer.LabelK8sName: "postgres", peer.LabelK8sVersion: "16"}},
				Status: running,
			},
			wantIPs: []string{"10.244.0.7"}, wantOK: true,
			want: workloads.Workload{Name: "db", Namespace: "data", CanonicalService: "postgres", CanonicalRevision: "16",
				App: "postgres", Version: "16", Cluster: "c1", ServiceAccount: "default"},
		},
		{
			name:    "bare pod without labels: names and latest",
			pod:     corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "debug", Namespace: "default"}, Status: running},
			wantIPs: []string{"10.244.0.7"}, wantOK: true,
			want: workloads.Workload{Name: "debug", Namespace: "default", CanonicalService: "debug", CanonicalRevision: "latest",
				Cluster: "c1", ServiceAccount: "default"},
		},
		{
			name: "cronjob pod",
			pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "backup-28391200-abcde", Namespace: "ops",
				OwnerReferences: owned("Job", "backup-28391200")}, Status: running},
			wantIPs: []string{"10.244.0.7"}, wantOK: true,
			want: workloads.Workload{Name: "backup", Namespace: "ops", CanonicalService: "backup", CanonicalRevision: "latest",
				Cluster: "c1", ServiceAccount: "default"},
		},
		{
			name: "replicaset not from a deployment keeps its name",
			pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "rs-abc", Namespace: "ns",
				OwnerReferences: owned("ReplicaSet", "plain-rs")}, Status: running},
			wantIPs: []string{"10.244.0.7"}, wantOK: true,
			want: workloads.Workload{Name: "plain-rs", Namespace: "ns", CanonicalService: "plain-rs", CanonicalRevision: "latest",
				Cluster: "c1", ServiceAccount: "default"},
		},
		{
			name: "dual stack: one entry per IP",
			pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"},
				Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}, {IP: "fd00::1"}}}},
			wantIPs: []string{"10.0.0.1", "fd00::1"}, wantOK: true,
			want: workloads.Workload{Name: "p", Namespace: "ns", CanonicalService: "p", CanonicalRevision: "latest",
				Cluster: "c1", ServiceAccount: "default"},
		},
		{name: "no IP yet", pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Status: corev1.PodStatus{Phase: corev1.PodPending}}},
		{name: "host network", pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{HostNetwork: true}, Status: running}},
		{name: "finished", pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"},
			Status: corev1.PodStatus{Phase: corev1.PodSucceeded, PodIP: "10.0.0.1"}}},
		{name: "garbage IP", pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "not-an-ip"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ips, w, ok := FromPod(&tc.pod, "c1")
			if ok != tc.wantOK || !reflect.DeepEqual(ips, tc.wantIPs) {
				t.Fatalf("ips %v ok %v, want %v %v", ips, ok, tc.wantIPs, tc.wantOK)
			}
			if ok && w != tc.want {
				t.Errorf("workload\n got %+v\nwant %+v", w, tc.want)
			}
		})
	}
}

func TestFromWorkloadEntry(t *testing.T) {
	we := &networkingv1.WorkloadEntry{
		ObjectMeta: metav1.ObjectMeta{Name: "vm-1", Namespace: "legacy", OwnerReferences: owned("WorkloadGroup", "billing")},
		Spec:       apinetworkingv1.WorkloadEntry{Address: "192.168.1.9", Labels: map[string]string{"app": "billing"}, ServiceAccount: "billing"},
	}
	ips, w, ok := FromWorkloadEntry(we, "vms")
	want := workloads.Workload{Name: "billing", Namespace: "legacy", CanonicalService: "billing", CanonicalRevision: "latest",
		App: "billing", Cluster: "vms", ServiceAccount: "billing"}
	if !ok || !reflect.DeepEqual(ips, []string{"192.168.1.9"}) || w != want {
		t.Errorf("%v %+v %v", ips, w, ok)
	}
	we.Spec.Address = "vm.example.com"
	if _, _, ok := FromWorkloadEntry(we, "vms"); ok {
		t.Error("hostname address accepted")
	}
}

func TestIndexOwnership(t *testing.T) {
	x := NewIndex()
	a := workloads.Workload{Name: "a"}
	b := workloads.Workload{Name: "b"}
	steps := []struct {
		op   func() error
		want map[string]string // ip → workload name served
	}{
		{func() error { return x.Set("pod/ns/a", []string{"10.0.0.1", "10.0.0.2"}, a) }, map[string]string{"10.0.0.1": "a", "10.0.0.2": "a"}},
		{func() error { return x.Set("pod/ns/a", []string{"10.0.0.1"}, a) }, map[string]string{"10.0.0.1": "a"}},
		// b takes a's IP (reused) before a's deletion is seen...
		{func() error { return x.Set("pod/ns/b", []string{"10.0.0.1"}, b) }, map[string]string{"10.0.0.1": "b"}},
		// ...so deleting a must not remove b's address.
		{func() error { return x.Delete("pod/ns/a") }, map[string]string{"10.0.0.1": "b"}},
		{func() error { return x.Delete("pod/ns/b") }, map[string]string{}},
	}
	for i, s := range steps {
		if err := s.op(); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for name, res := range x.Cache().GetResources() {
			w, err := workloads.FromStruct(res.(*structpb.Struct))
			if err != nil {
				t.Fatal(err)
			}
			got[name] = w.Name
		}
		if !reflect.DeepEqual(got, s.want) {
			t.Errorf("step %d: serving %v, want %v", i, got, s.want)
		}
		if x.Len() != len(s.want) {
			t.Errorf("step %d: %d addresses, want %d", i, x.Len(), len(s.want))
		}
	}
}
