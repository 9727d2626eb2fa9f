package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/leanmesh/leanmesh/filters/pluginconfig"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/install"
	"github.com/leanmesh/leanmesh/controller/release"
	"github.com/leanmesh/leanmesh/e2e/cluster"
)

// TestUninstallOnIstiod: with the controller running and a mesh-wide and a
// namespace policy applied (a sidecar on the real istiod running leanmesh),
// `leanmesh uninstall` (the chart's pre-delete hook) leaves no leanmesh
// EnvoyFilter or Telemetry on the real apiserver, the sidecar gets Istio's
// own telemetry back, and nothing re-applies them afterwards.
//
// This cluster has no kube-controller-manager: the Deployment is a stand-in
// whose "pod" is the in-process controller, and a watcher plays the garbage
// collector's part for the foreground deletion (stop the pod, then drop the
// foregroundDeletion finalizer), so the hook's wait is exercised as in a
// cluster.
func TestUninstallOnIstiod(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const root, ns, depName = "istio-system", "leanmesh-system", "leanmesh-controller"
	env, istiod := cluster.StartIstiodT(t, ctx, withCRDs, ns, "shop")
	rel := release.Embedded().Default()

	// The controller, as the Deployment's pod would run it.
	mgrCtx, stopMgr := context.WithCancel(ctx)
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: env.Scheme, Cache: install.CacheOptions(),
		Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &install.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Scheme: mgr.GetScheme(),
		Recorder: mgr.GetEventRecorder("leanmesh"), RootNamespace: root, Matrix: release.Embedded(), Metrics: install.NewMetrics(nil)}
	if err := r.SetupWithManager(mgrCtx, mgr); err != nil {
		t.Fatal(err)
	}
	mgrDone := make(chan error, 1)
	go func() { mgrDone <- mgr.Start(mgrCtx) }()
	t.Cleanup(func() {
		stopMgr()
		if err := <-mgrDone; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: depName}, Spec: appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": depName}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": depName}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "controller", Image: "leanmesh"}}}},
	}}
	if err := env.Client.Create(ctx, dep); err != nil {
		t.Fatal(err)
	}
	// The garbage collector's part in a foreground deletion.
	controllerStopped := make(chan time.Time, 1)
	go func() {
		for ctx.Err() == nil {
			d := &appsv1.Deployment{}
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(dep), d); err == nil && d.DeletionTimestamp != nil {
				stopMgr()
				if err := <-mgrDone; err != nil {
					t.Errorf("manager: %v", err)
				}
				mgrDone <- nil // for the cleanup
				controllerStopped <- time.Now()
				patch := client.MergeFrom(d.DeepCopy())
				d.Finalizers = slices.DeleteFunc(d.Finalizers, func(f string) bool { return f == metav1.FinalizerDeleteDependents })
				if err := env.Client.Patch(ctx, d, patch); err != nil {
					t.Errorf("dropping the foreground finalizer: %v", err)
				}
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()

	wl, err := env.CreateWorkload(ctx, cluster.Workload{
		Namespace: "shop", Name: "reviews", IP: "10.244.5.10",
		Labels: map[string]string{"app": "reviews", v1alpha1.LabelEnvoyVersion: rel.Envoy},
		Ports:  []cluster.Port{{Name: "http", Port: 8080}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Every LDS push is checked for leanmesh twice (the mesh-wide policy,
	// whose only pod is overridden, must not select it as well).
	dups := make(chan string, 100)
	opts := cluster.SidecarFor(wl)
	opts.Review = func(ts cluster.TypeSnapshot) string {
		for _, name := range ts.Names() {
			l, _ := ts.Resources[name].Msg.(*listenerv3.Listener)
			for _, ch := range cluster.HTTPFilterChains(l) {
				n := 0
				for _, f := range ch.HTTPFilters {
					if f == pluginconfig.PluginHTTP {
						n++
					}
				}
				if n > 1 {
					select {
					case dups <- name + "/" + ch.ChainName + ": " + strings.Join(ch.HTTPFilters, " "):
					default:
					}
				}
			}
		}
		return ""
	}
	sc := istiod.ConnectT(t, ctx, opts)
	inbound := func(s cluster.Snapshot) []string {
		for _, ch := range s.HTTPFilterChains("virtualInbound") {
			if ch.ChainName == "0.0.0.0_8080" {
				return ch.HTTPFilters
			}
		}
		return nil
	}
	waitLDS := func(what string, cond func([]string) bool) {
		t.Helper()
		var last []string
		if _, err := sc.WaitFor(ctx, func(s cluster.Snapshot) bool { last = inbound(s); return cond(last) }); err != nil {
			t.Fatalf("%s: %v (inbound %v)", what, err, last)
		}
		t.Logf("%-40s inbound %v", what, last)
	}

	for _, p := range []*v1alpha1.TelemetryPolicy{
		{ObjectMeta: metav1.ObjectMeta{Namespace: root, Name: "mesh"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "reviews"}, Spec: v1alpha1.TelemetryPolicySpec{Mode: v1alpha1.ModeShadow,
			Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "reviews"}}}},
	} {
		if err := env.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var p v1alpha1.TelemetryPolicy
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "reviews"}, &p); err == nil {
			if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); c != nil && c.Reason == v1alpha1.ReasonApplied {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("shop/reviews never Applied")
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitLDS("Shadow before uninstall", func(in []string) bool {
		return len(in) > 1 && in[0] == pluginconfig.PluginHTTP && slices.Contains(in, "istio.stats")
	})
	managed := func() []string {
		var out []string
		var efs networkingv1alpha3.EnvoyFilterList
		if err := env.Client.List(ctx, &efs, client.MatchingLabels{v1alpha1.LabelManagedBy: v1alpha1.ManagedBy}); err != nil {
			t.Fatal(err)
		}
		for _, o := range efs.Items {
			out = append(out, "EnvoyFilter "+o.Namespace+"/"+o.Name)
		}
		var tels telemetryv1.TelemetryList
		if err := env.Client.List(ctx, &tels, client.MatchingLabels{v1alpha1.LabelManagedBy: v1alpha1.ManagedBy}); err != nil {
			t.Fatal(err)
		}
		for _, o := range tels.Items {
			out = append(out, "Telemetry "+o.Namespace+"/"+o.Name)
		}
		return out
	}
	// Both policies settle (the mesh-wide one reports Overridden).
	for {
		var p v1alpha1.TelemetryPolicy
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: root, Name: "mesh"}, &p); err == nil {
			if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); c != nil && c.Reason == v1alpha1.ReasonOverridden {
				t.Logf("mesh: %s", c.Message)
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("istio-system/mesh never Overridden")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	t.Logf("before: %v", managed())
	select {
	case d := <-dups:
		t.Fatalf("leanmesh twice on the sidecar: %s", d)
	default:
	}

	start := time.Now()
	var out bytes.Buffer
	uctx, ucancel := context.WithTimeout(ctx, time.Minute)
	defer ucancel()
	if err := uninstall(uctx, env.Client, ns, depName, &out); err != nil {
		t.Fatalf("uninstall: %v\n%s", err, out.String())
	}
	t.Logf("leanmesh uninstall took %s:\n%s", time.Since(start).Round(time.Millisecond), out.String())
	select {
	case at := <-controllerStopped:
		t.Logf("controller stopped %s after the hook started", at.Sub(start).Round(time.Millisecond))
	default:
		t.Fatal("uninstall returned while the controller was still running")
	}
	if left := managed(); len(left) > 0 {
		t.Fatalf("left after uninstall: %v", left)
	}
	waitLDS("Istio's telemetry after uninstall", func(in []string) bool {
		return len(in) > 0 && !slices.Contains(in, pluginconfig.PluginHTTP) && slices.Contains(in, "istio.stats") && slices.Contains(in, "istio.metadata_exchange")
	})
	// Nothing re-applies them (the policies are still there, the controller is not).
	time.Sleep(2 * time.Second)
	if left := managed(); len(left) > 0 {
		t.Fatalf("re-applied after uninstall: %v", left)
	}
	if s := inbound(sc.Snapshot()); slices.Contains(s, pluginconfig.PluginHTTP) {
		t.Fatalf("leanmesh back on the sidecar: %v", s)
	}
}
