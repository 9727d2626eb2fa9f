package install

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/leanmesh/leanmesh/filters/pluginconfig"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
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
	env, istiod := cluster.StartIstiodT(t, ctx, withCRDs, "shop", "pay")
	h := runController(t, env)
	sidecars := map[string]*cluster.Sidecar{}
	// Every LDS push each sidecar receives is checked, not only the one a
	// wait ends on: a listener with leanmesh twice, even for one push
	// between two reconciles, double counts every request it serves.
	var dupMu sync.Mutex
	var dups []string
	pushes, phase := 0, "start"
	setPhase := func(t *testing.T) { dupMu.Lock(); phase = t.Name(); dupMu.Unlock() }
	for i, w := range []struct{ ns, app string }{{"shop", "reviews"}, {"shop", "legacy"}, {"pay", "pay"}} {
		wl := libraryWorkload(t, ctx, env, cluster.Workload{Namespace: w.ns, Name: w.app, IP: fmt.Sprintf("10.244.1.%d", 10+i)})
		opts := cluster.SidecarFor(wl)
		app := w.app
		opts.Review = func(ts cluster.TypeSnapshot) string {
			if ts.TypeURL != cluster.TypeListener {
				return ""
			}
			dupMu.Lock()
			defer dupMu.Unlock()
			pushes++
			for _, l := range ts.Names() {
				l, _ := ts.Resources[l].Msg.(*listenerv3.Listener)
				for _, ch := range cluster.HTTPFilterChains(l) {
					if n := count(ch.HTTPFilters, pluginconfig.PluginHTTP); n > 1 {
						dups = append(dups, fmt.Sprintf("%s: %s push %s: %s/%s has leanmesh %d times: %v", phase, app, ts.Version, l.GetName(), ch.ChainName, n, ch.HTTPFilters))
					}
				}
			}
			return ""
		}
		sidecars[w.app] = istiod.ConnectT(t, ctx, opts)
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
	// Every predicate also requires exactly one leanmesh filter: a stale
	// placement copy left next to the policy's own object shows up as a
	// second one (Envoy would run the filter twice, double counting).
	once := func(in []string) bool { return count(in, pluginconfig.PluginHTTP) == 1 }
	leanmesh := func(in []string) bool {
		return once(in) && in[0] == pluginconfig.PluginHTTP && !slices.Contains(in, "istio.stats") && !slices.Contains(in, "istio.metadata_exchange")
	}
	istio := func(in []string) bool {
		return len(in) > 0 && !slices.Contains(in, pluginconfig.PluginHTTP) && slices.Contains(in, "istio.stats") && slices.Contains(in, "istio.metadata_exchange")
	}
	shadow := func(in []string) bool {
		return once(in) && len(in) > 1 && in[0] == pluginconfig.PluginHTTP && in[1] == "istio.metadata_exchange" && slices.Contains(in, "istio.stats")
	}

	t.Run("mesh-wide LeanMesh reaches every workload", func(t *testing.T) {
		setPhase(t)
		h.policy(rootNS, "mesh", v1alpha1.TelemetryPolicySpec{})
		h.ready(rootNS, "mesh", metav1.ConditionTrue, v1alpha1.ReasonApplied)
		for _, app := range []string{"reviews", "legacy", "pay"} {
			waitLDS(app, "LeanMesh from the root policy", leanmesh)
		}
	})

	t.Run("a workload opted out with mode Istio", func(t *testing.T) {
		setPhase(t)
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
		setPhase(t)
		h.policy("pay", "ns", v1alpha1.TelemetryPolicySpec{Mode: v1alpha1.ModeShadow})
		h.ready("pay", "ns", metav1.ConditionTrue, v1alpha1.ReasonApplied)
		waitLDS("pay", "Shadow from the namespace policy", shadow)
		waitLDS("reviews", "still LeanMesh", leanmesh)
		waitLDS("legacy", "still Istio", istio)
	})

	t.Run("removing the overrides hands the workloads back", func(t *testing.T) {
		setPhase(t)
		h.deletePolicy("pay", "ns")
		h.deletePolicy("shop", "legacy")
		for _, app := range []string{"reviews", "legacy", "pay"} {
			waitLDS(app, "LeanMesh from the root policy again", leanmesh)
		}
		// Settle: a stale object deleted late would show up in a later push.
		time.Sleep(2 * time.Second)
		for _, app := range []string{"reviews", "legacy", "pay"} {
			waitLDS(app, "LeanMesh once, settled", leanmesh)
		}
	})

	// This cluster has no garbage collector (no kube-controller-manager), so
	// what is deleted here is deleted by the controller itself: the owner
	// references on the root policy's placement copies would only help
	// where a garbage collector runs.
	t.Run("policies deleted while the controller is down leave nothing behind", func(t *testing.T) {
		setPhase(t)
		h.policy("pay", "ns", v1alpha1.TelemetryPolicySpec{Mode: v1alpha1.ModeShadow})
		h.ready("pay", "ns", metav1.ConditionTrue, v1alpha1.ReasonApplied)
		waitLDS("pay", "Shadow from the namespace policy", shadow)
		waitLDS("reviews", "still LeanMesh", leanmesh)
		before := leanmeshEnvoyFilters(t, h)
		t.Logf("before: %v", before)
		if len(before) < 4 {
			t.Fatalf("expected the root policy's placement copies and pay/ns's objects, got %v", before)
		}
		h.stop()
		for _, k := range []client.ObjectKey{keyOf(rootNS, "mesh"), keyOf("pay", "ns")} {
			p := &v1alpha1.TelemetryPolicy{}
			p.Namespace, p.Name = k.Namespace, k.Name
			if err := h.c.Delete(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
		if left := leanmeshEnvoyFilters(t, h); len(left) == 0 {
			t.Fatal("objects vanished without a controller: the test would prove nothing")
		}
		start := time.Now()
		runController(t, env)
		h.eventually("no leanmesh EnvoyFilter or Telemetry left", func() error {
			if left := leanmeshEnvoyFilters(t, h); len(left) > 0 {
				return fmt.Errorf("left: %v", left)
			}
			return nil
		})
		t.Logf("restarted controller removed every orphan in %s", time.Since(start).Round(time.Millisecond))
		for _, app := range []string{"reviews", "legacy", "pay"} {
			waitLDS(app, "Istio's telemetry, no leanmesh", istio)
		}
	})

	dupMu.Lock()
	defer dupMu.Unlock()
	t.Logf("%d LDS pushes checked for a duplicated leanmesh filter", pushes)
	for _, d := range dups {
		t.Error(d)
	}
}

// leanmeshEnvoyFilters lists "ns/name" of every EnvoyFilter and Telemetry
// labelled as leanmesh's, in every namespace.
func leanmeshEnvoyFilters(t *testing.T, h *harness) []string {
	t.Helper()
	sel := client.MatchingLabels{v1alpha1.LabelManagedBy: v1alpha1.ManagedBy}
	var out []string
	var efs networkingv1alpha3.EnvoyFilterList
	if err := h.c.List(context.Background(), &efs, sel); err != nil {
		t.Fatal(err)
	}
	for _, o := range efs.Items {
		out = append(out, o.Namespace+"/"+o.Name)
	}
	var tels telemetryv1.TelemetryList
	if err := h.c.List(context.Background(), &tels, sel); err != nil {
		t.Fatal(err)
	}
	for _, o := range tels.Items {
		out = append(out, o.Namespace+"/"+o.Name+" (Telemetry)")
	}
	return out
}

func count(xs []string, x string) int {
	n := 0
	for _, v := range xs {
		if v == x {
			n++
		}
	}
	return n
}

func keyOf(ns, name string) client.ObjectKey { return client.ObjectKey{Namespace: ns, Name: name} }
