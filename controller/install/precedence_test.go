package install

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/render"
	"github.com/leanmesh/leanmesh/e2e/cluster"
)

// TestScopePrecedenceOnIstiod runs the controller against a real
// kube-apiserver and istiod and checks what each sidecar receives when
// policies of different scopes select it:
//   - a mesh-wide LeanMesh policy (root namespace, no selector) with one
//     workload opted out by a workload-selector policy in mode Istio;
//   - a namespace-wide Shadow policy overriding the mesh-wide one.
func TestScopePrecedenceOnIstiod(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	env := cluster.StartT(t, cluster.Options{CRDPaths: []string{"../../config/crd/bases"}, Scheme: v1alpha1.AddToScheme})
	istiod, err := env.StartIstiod(ctx, cluster.IstiodOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := runController(t, env)
	for _, ns := range []string{"shop", "pay"} {
		if err := env.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
	}
	sidecars := map[string]*cluster.Sidecar{}
	for i, w := range []struct{ ns, app string }{{"shop", "reviews"}, {"shop", "legacy"}, {"pay", "pay"}} {
		wl, err := env.CreateWorkload(ctx, cluster.Workload{
			Namespace: w.ns, Name: w.app, IP: fmt.Sprintf("10.244.1.%d", 10+i),
			Labels: map[string]string{"app": w.app, v1alpha1.LabelEnvoyVersion: h.rel.Envoy},
			Ports:  []cluster.Port{{Name: "http", Port: 8080}},
		})
		if err != nil {
			t.Fatal(err)
		}
		sc, err := cluster.ConnectSidecar(ctx, istiod.XDSAddr, cluster.SidecarFor(wl))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sc.Close() })
		sidecars[w.app] = sc
	}
	inbound := func(s cluster.Snapshot) []string {
		for _, ch := range s.HTTPFilterChains("virtualInbound") {
			if ch.ChainName == "0.0.0.0_8080" {
				return ch.HTTPFilters
			}
		}
		return nil
	}
	waitLDS := func(app, what string, cond func(in []string) bool) {
		t.Helper()
		var last []string
		if _, err := sidecars[app].WaitFor(ctx, func(s cluster.Snapshot) bool { last = inbound(s); return cond(last) }); err != nil {
			t.Fatalf("%s: %s: %v (inbound %v)", app, what, err, last)
		}
		t.Logf("%-8s %-34s inbound %v", app, what, last)
	}
	leanmesh := func(in []string) bool {
		return len(in) > 0 && in[0] == render.PluginHTTP && !slices.Contains(in, "istio.stats") && !slices.Contains(in, "istio.metadata_exchange")
	}
	istio := func(in []string) bool {
		return len(in) > 0 && !slices.Contains(in, render.PluginHTTP) && slices.Contains(in, "istio.stats") && slices.Contains(in, "istio.metadata_exchange")
	}
	shadow := func(in []string) bool {
		return len(in) > 1 && in[0] == render.PluginHTTP && in[1] == "istio.metadata_exchange" && slices.Contains(in, "istio.stats")
	}

	t.Run("mesh-wide LeanMesh reaches every workload", func(t *testing.T) {
		h.policy(rootNS, "mesh", v1alpha1.TelemetryPolicySpec{})
		h.ready(rootNS, "mesh", metav1.ConditionTrue, v1alpha1.ReasonApplied)
		for _, app := range []string{"reviews", "legacy", "pay"} {
			waitLDS(app, "LeanMesh from the root policy", leanmesh)
		}
	})

	t.Run("a workload opted out with mode Istio", func(t *testing.T) {
		time.Sleep(1100 * time.Millisecond) // creation timestamps have second granularity
		h.policy("shop", "legacy", v1alpha1.TelemetryPolicySpec{Mode: v1alpha1.ModeIstio, Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "legacy"}}})
		h.ready("shop", "legacy", metav1.ConditionTrue, v1alpha1.ReasonIstioTelemetry)
		waitLDS("legacy", "Istio's own telemetry back", istio)
		waitLDS("reviews", "still LeanMesh", leanmesh)
		waitLDS("pay", "still LeanMesh", leanmesh)
		var p v1alpha1.TelemetryPolicy
		h.eventually("mesh status lists governed and overridden workloads", func() error {
			if err := h.c.Get(ctx, keyOf(rootNS, "mesh"), &p); err != nil {
				return err
			}
			gov := []v1alpha1.WorkloadRef{{Namespace: "pay", Name: "pay", Pods: 1}, {Namespace: "shop", Name: "reviews", Pods: 1}}
			over := []v1alpha1.WorkloadRef{{Namespace: "shop", Name: "legacy", Pods: 1, By: "shop/legacy"}}
			if !equality.Semantic.DeepEqual(p.Status.GovernedWorkloads, gov) || !equality.Semantic.DeepEqual(p.Status.OverriddenWorkloads, over) {
				return fmt.Errorf("governed %+v overridden %+v", p.Status.GovernedWorkloads, p.Status.OverriddenWorkloads)
			}
			return nil
		})
		var legacy v1alpha1.TelemetryPolicy
		if err := h.c.Get(ctx, keyOf("shop", "legacy"), &legacy); err != nil {
			t.Fatal(err)
		}
		if want := []v1alpha1.WorkloadRef{{Namespace: "shop", Name: "legacy", Pods: 1}}; !equality.Semantic.DeepEqual(legacy.Status.GovernedWorkloads, want) {
			t.Errorf("legacy governs %+v", legacy.Status.GovernedWorkloads)
		}
	})

	t.Run("a namespace policy overrides the root one", func(t *testing.T) {
		h.policy("pay", "ns", v1alpha1.TelemetryPolicySpec{Mode: v1alpha1.ModeShadow})
		h.ready("pay", "ns", metav1.ConditionTrue, v1alpha1.ReasonApplied)
		waitLDS("pay", "Shadow from the namespace policy", shadow)
		waitLDS("reviews", "still LeanMesh", leanmesh)
		waitLDS("legacy", "still Istio", istio)
	})

	t.Run("removing the overrides hands the workloads back", func(t *testing.T) {
		h.deletePolicy("pay", "ns")
		h.deletePolicy("shop", "legacy")
		for _, app := range []string{"reviews", "legacy", "pay"} {
			waitLDS(app, "LeanMesh from the root policy again", leanmesh)
		}
	})
}

func keyOf(ns, name string) client.ObjectKey { return client.ObjectKey{Namespace: ns, Name: name} }
