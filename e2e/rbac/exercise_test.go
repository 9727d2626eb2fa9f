package rbac

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/lazyxdsctl"
	"github.com/leanmesh/leanmesh/controller/release"
	"github.com/leanmesh/leanmesh/controller/workloadtable"
	"github.com/leanmesh/leanmesh/e2e/cluster"
	"github.com/leanmesh/leanmesh/filters/workloads"
)

// note remembers objects the controller wrote, for the permissions
// admission checks on them (markOwnerFinalizers).
func (r *run) note(objs ...client.Object) { r.written = append(r.written, objs...) }

// exerciseCore walks TelemetryPolicies through what the reconciler does:
// drop an old finalizer, apply (create, then patch), switch modes (delete
// stale objects), refuse a conflicting policy more than once (an event, then
// its series), and clean up after deletion.
func exerciseCore(t *testing.T, r *run) {
	t.Helper()
	ctx, c, ns := r.ctx, r.env.Client, r.ns
	rel := release.Embedded().Default()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews-1", Labels: map[string]string{
			"app": "reviews", "security.istio.io/tlsMode": "istio", v1alpha1.LabelEnvoyVersion: rel.Envoy}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	// A Telemetry an earlier release rendered for the policy: deleted as
	// stale (the renderer no longer writes Telemetries).
	stale := &telemetryv1.Telemetry{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "leanmesh-reviews", Labels: map[string]string{
		v1alpha1.LabelManagedBy: v1alpha1.ManagedBy, v1alpha1.LabelPolicy: "reviews", v1alpha1.LabelPolicyNamespace: ns}}}
	if err := c.Create(ctx, stale); err != nil {
		t.Fatal(err)
	}
	// An earlier version's finalizer: the reconciler patches it away.
	p := &v1alpha1.TelemetryPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews", Finalizers: []string{v1alpha1.Finalizer}},
		Spec:       v1alpha1.TelemetryPolicySpec{Mode: v1alpha1.ModeLeanMesh},
	}
	if err := c.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	r.ready(p, v1alpha1.ReasonApplied)
	r.eventually(30*time.Second, "old finalizer dropped", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(p), p); err != nil {
			return err
		}
		if len(p.Finalizers) > 0 {
			return fmt.Errorf("finalizers %v", p.Finalizers)
		}
		return nil
	})
	r.eventually(30*time.Second, "the earlier release's Telemetry deleted", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(stale), stale); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there: %v", err)
		}
		return nil
	})
	leanMeshObjs := r.owned(p)
	if len(leanMeshObjs) == 0 {
		t.Fatal("LeanMesh mode rendered nothing")
	}
	r.note(leanMeshObjs...)

	// A same-rank policy created later conflicts: refused with an event;
	// a pod change re-reconciles it unchanged, repeating the event.
	later := &v1alpha1.TelemetryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews-too"},
		Spec: v1alpha1.TelemetryPolicySpec{Mode: v1alpha1.ModeLeanMesh}}
	time.Sleep(1100 * time.Millisecond) // creation timestamps have second precision: the older one must be older
	if err := c.Create(ctx, later); err != nil {
		t.Fatal(err)
	}
	r.ready(later, v1alpha1.ReasonConflict)
	for i := range 3 {
		patch := client.MergeFrom(pod.DeepCopy())
		pod.Labels["touch"] = fmt.Sprint(i)
		if err := c.Patch(ctx, pod, patch); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
	}
	if err := c.Delete(ctx, later); err != nil {
		t.Fatal(err)
	}

	// Switching modes deletes what the new mode does not render.
	for _, m := range []v1alpha1.Mode{v1alpha1.ModeShadow, v1alpha1.ModeIstio} {
		patch := client.MergeFrom(p.DeepCopy())
		p.Spec.Mode = m
		if err := c.Patch(ctx, p, patch); err != nil {
			t.Fatal(err)
		}
		want := v1alpha1.ReasonApplied
		if m == v1alpha1.ModeIstio {
			want = v1alpha1.ReasonIstioTelemetry
		}
		r.ready(p, want)
		r.note(r.owned(p)...)
	}
	if err := c.Delete(ctx, p); err != nil {
		t.Fatal(err)
	}
	r.eventually(30*time.Second, "rendered objects removed after the policy's deletion", func() error {
		if left := r.owned(p); len(left) > 0 {
			return fmt.Errorf("%d left", len(left))
		}
		return nil
	})
}

// ready waits for p's Ready condition at its current generation.
func (r *run) ready(p *v1alpha1.TelemetryPolicy, reason string) {
	r.t.Helper()
	r.eventually(60*time.Second, fmt.Sprintf("%s/%s Ready reason %s", p.Namespace, p.Name, reason), func() error {
		var cur v1alpha1.TelemetryPolicy
		if err := r.env.Client.Get(r.ctx, client.ObjectKeyFromObject(p), &cur); err != nil {
			return err
		}
		c := meta.FindStatusCondition(cur.Status.Conditions, v1alpha1.ConditionReady)
		if c == nil || c.ObservedGeneration != cur.Generation || c.Reason != reason {
			return fmt.Errorf("conditions %+v at generation %d", cur.Status.Conditions, cur.Generation)
		}
		return nil
	})
}

// owned lists the EnvoyFilters and Telemetries labelled for p.
func (r *run) owned(p *v1alpha1.TelemetryPolicy) []client.Object {
	r.t.Helper()
	sel := client.MatchingLabels{v1alpha1.LabelPolicy: p.Name, v1alpha1.LabelPolicyNamespace: p.Namespace}
	var out []client.Object
	var efs networkingv1alpha3.EnvoyFilterList
	if err := r.env.Client.List(r.ctx, &efs, sel); err != nil {
		r.t.Fatal(err)
	}
	for i := range efs.Items {
		out = append(out, efs.Items[i])
	}
	var tels telemetryv1.TelemetryList
	if err := r.env.Client.List(r.ctx, &tels, sel); err != nil {
		r.t.Fatal(err)
	}
	for i := range tels.Items {
		out = append(out, tels.Items[i])
	}
	return out
}

// exerciseLeaderElection waits until the run holds the Lease; stop then
// releases it (LeaderElectionReleaseOnCancel).
func exerciseLeaderElection(t *testing.T, r *run) {
	t.Helper()
	r.eventually(60*time.Second, "leader Lease held", func() error {
		var l coordinationv1.Lease
		if err := r.env.Client.Get(r.ctx, client.ObjectKey{Namespace: controllerNS, Name: "leanmesh-controller.leanmesh.io"}, &l); err != nil {
			return err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
			return fmt.Errorf("no holder")
		}
		return nil
	})
}

// exerciseLazyXDS: a LazyXDS with telemetry seeding (its bearer token read
// from a Secret), baseline Sidecars and the lazy egress, one dependency
// learned from an access log (Sidecar patched, snapshot ConfigMap written),
// then the LazyXDS deleted (its Sidecars, redirect and egress removed).
func exerciseLazyXDS(t *testing.T, r *run) {
	t.Helper()
	ctx, c, ns := r.ctx, r.env.Client, r.ns
	ws := []cluster.Workload{
		{Namespace: ns, Name: "productpage", IP: "10.244.7.11", Ports: []cluster.Port{{Name: "http", Port: 9080}}},
		{Namespace: ns, Name: "ratings", IP: "10.244.7.12", Ports: []cluster.Port{{Name: "http", Port: 9080}}},
	}
	for _, w := range ws {
		if _, err := r.env.CreateWorkload(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "prometheus-token"},
		StringData: map[string]string{"token": "t0ken"}}); err != nil {
		t.Fatal(err)
	}
	prom := emptyPrometheus(t)
	lazy := &v1alpha1.LazyXDS{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "lazy"}, Spec: v1alpha1.LazyXDSSpec{
		SeedFromTelemetry: &v1alpha1.TelemetrySeed{Prometheus: v1alpha1.PrometheusEndpoint{
			URL: prom.URL, BearerTokenSecret: &v1alpha1.SecretKeySelector{Name: "prometheus-token", Key: "token"}}},
	}}
	if err := c.Create(ctx, lazy); err != nil {
		t.Fatal(err)
	}
	sidecar := func(w cluster.Workload) (*networkingv1.Sidecar, error) {
		var sc networkingv1.Sidecar
		err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "leanmesh-lazy-" + w.Name + "-0"}, &sc)
		return &sc, err
	}
	r.eventually(90*time.Second, "baseline Sidecars and the lazy egress", func() error {
		for _, w := range ws {
			sc, err := sidecar(w)
			if err != nil {
				return err
			}
			r.note(sc)
		}
		var dep appsv1.Deployment
		return c.Get(ctx, client.ObjectKey{Namespace: rootNS, Name: "leanmesh-lazy-egress"}, &dep)
	})
	r.eventually(30*time.Second, "seeded from telemetry", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(lazy), lazy); err != nil {
			return err
		}
		if cond := meta.FindStatusCondition(lazy.Status.Conditions, "Seeded"); cond == nil || cond.Status != metav1.ConditionTrue {
			return fmt.Errorf("conditions %+v", lazy.Status.Conditions)
		}
		return nil
	})
	var efs networkingv1alpha3.EnvoyFilterList
	if err := c.List(ctx, &efs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for i := range efs.Items {
		r.note(efs.Items[i])
	}

	// productpage calls ratings through the egress: learned.
	sendAccessLog(t, r.als, ns, ws[0].IP, ws[1].OutboundCluster(9080), ws[1].Host())
	r.eventually(60*time.Second, "ratings learned into productpage's Sidecar and the snapshot", func() error {
		sc, err := sidecar(ws[0])
		if err != nil {
			return err
		}
		if !strings.Contains(fmt.Sprint(sc.Spec.Egress), ws[1].Host()) {
			return fmt.Errorf("egress %v", sc.Spec.Egress)
		}
		var cm corev1.ConfigMap
		return c.Get(ctx, client.ObjectKey{Namespace: controllerNS, Name: lazyxdsctl.DefaultConfigMapName}, &cm)
	})

	// An egress outside the namespaces the controller may write in (the
	// generated Role's): refused in the status, nothing written, no request
	// denied.
	elsewhere := &v1alpha1.LazyXDS{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "elsewhere"}, Spec: v1alpha1.LazyXDSSpec{
		Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "none"}},
		Egress:   v1alpha1.LazyEgress{Namespace: "rbac-elsewhere", Name: "egress"},
	}}
	if err := c.Create(ctx, elsewhere); err != nil {
		t.Fatal(err)
	}
	r.eventually(30*time.Second, "a LazyXDS with an egress elsewhere refused in its status", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(elsewhere), elsewhere); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(elsewhere.Status.Conditions, v1alpha1.ConditionReady)
		if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != v1alpha1.ReasonEgressNamespaceNotAllowed ||
			!strings.Contains(cond.Message, `"rbac-elsewhere"`) {
			return fmt.Errorf("conditions %+v", elsewhere.Status.Conditions)
		}
		return nil
	})
	var deps appsv1.DeploymentList
	if err := c.List(ctx, &deps, client.InNamespace("rbac-elsewhere")); err != nil || len(deps.Items) > 0 {
		t.Errorf("egress Deployments in rbac-elsewhere: %d (%v)", len(deps.Items), err)
	}
	if err := c.Delete(ctx, elsewhere); err != nil {
		t.Fatal(err)
	}

	// The LazyXDS goes: Sidecars, redirect and egress go with it.
	if err := c.Delete(ctx, lazy); err != nil {
		t.Fatal(err)
	}
	r.eventually(60*time.Second, "the lazy egress removed with the last LazyXDS", func() error {
		managed := client.MatchingLabels{v1alpha1.LabelManagedBy: v1alpha1.ManagedBy}
		for _, l := range []client.ObjectList{&appsv1.DeploymentList{}, &corev1.ServiceList{}, &corev1.ServiceAccountList{},
			&networkingv1.GatewayList{}, &networkingv1.VirtualServiceList{}, &networkingv1.SidecarList{}} {
			if err := c.List(ctx, l, managed); err != nil {
				return err
			}
			if n := meta.LenList(l); n > 0 {
				return fmt.Errorf("%d %T left", n, l)
			}
		}
		return nil
	})
}

// sendAccessLog is the lazy egress's Envoy http_grpc access logger: one
// stream, the node in the first message, one request callerIP → cluster.
func sendAccessLog(t *testing.T, addr, ns, callerIP, cluster, authority string) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := accesslogv3.NewAccessLogServiceClient(conn).StreamAccessLogs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sock := func(ip string, port uint32) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
	}
	msg := &accesslogv3.StreamAccessLogsMessage{
		Identifier: &accesslogv3.StreamAccessLogsMessage_Identifier{LogName: "leanmesh-lazy", Node: &corev3.Node{
			Id:      "router~10.244.9.9~leanmesh-lazy-egress-7d9f-abcde.istio-system~istio-system.svc.cluster.local",
			Cluster: "leanmesh-lazy-egress.istio-system"}},
		LogEntries: &accesslogv3.StreamAccessLogsMessage_HttpLogs{HttpLogs: &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{
			LogEntry: []*accesslogdatav3.HTTPAccessLogEntry{{
				CommonProperties: &accesslogdatav3.AccessLogCommon{
					SampleRate: 1, StartTime: timestamppb.Now(),
					DownstreamRemoteAddress: sock(callerIP, 51234), DownstreamDirectRemoteAddress: sock(callerIP, 51234),
					DownstreamLocalAddress: sock("10.244.9.9", 8080), UpstreamRemoteAddress: sock("10.244.7.12", 9080),
					UpstreamCluster: cluster, RouteName: "leanmesh-lazy-default", UpstreamRequestAttemptCount: 1,
					AccessLogType: accesslogdatav3.AccessLogType_DownstreamEnd,
				},
				Request: &accesslogdatav3.HTTPRequestProperties{RequestMethod: corev3.RequestMethod_GET, Scheme: "http", Authority: authority, Path: "/",
					RequestHeaders: map[string]string{"x-envoy-peer-metadata-id": "sidecar~" + callerIP + "~productpage-0." + ns + "~" + ns + ".svc.cluster.local"}},
				Response: &accesslogdatav3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(200)},
			}},
		}},
	}
	if err := stream.Send(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); err != nil && !strings.Contains(err.Error(), "EOF") {
		t.Logf("ALS stream close: %v", err)
	}
}

// exerciseWorkloadTable: a proxy's client subscribes with a service-account
// token (a TokenReview) and learns a pod.
func exerciseWorkloadTable(t *testing.T, r *run) {
	t.Helper()
	tok := r.token(r.ns, "frontend", workloadtable.DefaultAudience)
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := r.env.CreateWorkload(r.ctx, cluster.Workload{Namespace: r.ns, Name: "details", IP: "10.244.8.21",
		Ports: []cluster.Port{{Name: "tcp", Port: 9080}}}); err != nil {
		t.Fatal(err)
	}
	wc, err := workloads.NewClient(workloads.ClientOptions{Address: r.wt, Plaintext: true, TokenPath: path,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := wc.Start(); err != nil {
		t.Fatal(err)
	}
	defer wc.Stop()
	r.eventually(60*time.Second, "the workload table serves the pod", func() error {
		if wc.Table().Len() == 0 {
			return fmt.Errorf("empty table; last error %q", wc.LastError())
		}
		return nil
	})
}

// exerciseMetricsAuth: a scrape with a token the controller must
// authenticate (TokenReview) and authorize (SubjectAccessReview); the
// scraper holds no /metrics permission, so the answer is 403.
func exerciseMetricsAuth(t *testing.T, r *run) {
	t.Helper()
	tok := r.token(r.ns, "scraper")
	r.eventually(30*time.Second, "a scrape answered", func() error {
		code, err := scrape(r.metrics, tok)
		if err != nil {
			return err
		}
		if code != http.StatusForbidden {
			return fmt.Errorf("scrape by an unauthorized service account: HTTP %d, want 403", code)
		}
		return nil
	})
}
