package workloadtable

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/leanmesh/leanmesh/e2e/cluster"
	"github.com/leanmesh/leanmesh/filters/workloads"
)

// TestStreamWithRealAPIServer runs the controller side in a real
// controller-runtime manager against a real kube-apiserver (e2e/cluster), and
// the library's client with a real projected-style token (TokenRequest,
// audience istio-ca) validated by a real TokenReview. A pod appears in the
// library's table and leaves it when deleted; a token for another audience
// gets nothing.
func TestStreamWithRealAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env := cluster.StartT(t, cluster.Options{})

	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Setup(mgr, Options{ClusterID: "e2e-cluster", Listener: lis, WorkloadEntries: true}); err != nil {
		t.Fatal(err)
	}
	mgrCtx, stopMgr := context.WithCancel(ctx)
	mgrDone := make(chan error, 1)
	go func() { mgrDone <- mgr.Start(mgrCtx) }()
	defer func() {
		stopMgr()
		if err := <-mgrDone; err != nil {
			t.Errorf("manager: %v", err)
		}
	}()

	const ns = "shop"
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	// No kube-controller-manager runs: create the service account ourselves.
	if err := env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "frontend"}}); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	token := func(audience string) string {
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "frontend", &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("token request: %v", err)
		}
		return tr.Status.Token
	}
	client := func(tok string) *workloads.Client {
		c, err := workloads.NewClient(workloads.ClientOptions{Address: lis.Addr().String(), Plaintext: true,
			TokenPath: writeToken(t, tok), MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Stop)
		return c
	}
	good := client(token(DefaultAudience))
	wrongAudience := client(token("some-other-audience"))

	// A Deployment's pod (owner chain ReplicaSet → Deployment by name).
	isController := true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews-v2-5c9d7f-abcde",
			Labels: map[string]string{"app": "reviews", "version": "v2", "pod-template-hash": "5c9d7f"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "reviews-v2-5c9d7f",
				UID: "00000000-0000-0000-0000-000000000001", Controller: &isController}}},
		Spec: corev1.PodSpec{ServiceAccountName: "reviews", NodeName: "local",
			Containers: []corev1.Container{{Name: "app", Image: "leanmesh.invalid/reviews"}}},
	}
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	// No kubelet: give it an IP through the status subresource.
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.21", PodIPs: []corev1.PodIP{{IP: "10.244.0.21"}}}
	if err := env.Client.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	// And one made by the shared helper (no owner: the pod name is the workload).
	if _, err := env.CreateWorkload(ctx, cluster.Workload{Namespace: ns, Name: "ratings", IP: "10.244.0.22", Ports: []cluster.Port{{Name: "tcp", Port: 9080}}}); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	want := workloads.Workload{Name: "reviews-v2", Namespace: ns, CanonicalService: "reviews", CanonicalRevision: "v2",
		App: "reviews", Version: "v2", Cluster: "e2e-cluster", ServiceAccount: "reviews"}
	waitFor(t, "the library to learn the pods", func() bool {
		w := good.Table().Lookup(netip.MustParseAddr("10.244.0.21"))
		r := good.Table().Lookup(netip.MustParseAddr("10.244.0.22"))
		return w != nil && *w == want && r != nil && r.Name == "ratings-0"
	})
	t.Logf("pods learned %s after creation", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	if err := env.Client.Delete(ctx, pod, ctrlclient.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the library to forget the deleted pod", func() bool {
		return good.Table().Lookup(netip.MustParseAddr("10.244.0.21")) == nil
	})
	t.Logf("pod forgotten %s after deletion", time.Since(start).Round(time.Millisecond))
	if good.Table().Lookup(netip.MustParseAddr("10.244.0.22")) == nil {
		t.Error("the other pod went too")
	}

	// The refused client keeps retrying; between a refusal and the next one
	// its last error can be the redial's (EOF seen under load), so wait for
	// the refusal itself. It must never have learned an entry.
	waitFor(t, "the other audience's token to be refused (PermissionDenied)", func() bool {
		return strings.Contains(wrongAudience.LastError(), "PermissionDenied")
	})
	if n := wrongAudience.Table().Len(); n != 0 {
		t.Errorf("token for another audience: %d entries learned, last error %q", n, wrongAudience.LastError())
	}
}
