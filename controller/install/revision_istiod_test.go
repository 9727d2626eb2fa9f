package install

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/leanmesh/leanmesh/filters/pluginconfig"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/e2e/cluster"
)

// TestTwoRevisionsOnIstiod: an Istio canary on one apiserver: the default
// istiod and a second one with REVISION=canary. One policy per revision
// (spec.istioRevision renders istio.io/rev on the objects, so only that
// revision's istiod reads them): v1 pods on the default revision in
// LeanMesh mode, v2 pods on the canary in Shadow mode. Each sidecar gets
// its revision's policy, and a v2 proxy still on the default istiod (not
// yet moved) does not see the canary's objects.
func TestTwoRevisionsOnIstiod(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	env, stable := cluster.StartIstiodT(t, ctx, withCRDs, "shop")
	canary, err := env.StartIstiod(ctx, cluster.IstiodOptions{Env: map[string]string{"REVISION": "canary"}})
	if err != nil {
		t.Fatal(err)
	}
	h := runController(t, env)
	var wls []*cluster.WorkloadObjects
	for i, v := range []struct{ version, rev string }{{"v1", ""}, {"v2", "canary"}} {
		labels := map[string]string{"app": "reviews", "version": v.version}
		if v.rev != "" {
			labels[v1alpha1.LabelRevision] = v.rev
		}
		wls = append(wls, libraryWorkload(t, ctx, env, cluster.Workload{
			Namespace: "shop", Name: "reviews-" + v.version, IP: "10.244.6." + string(rune('0'+i+1)), Labels: labels}))
	}
	v1 := stable.ConnectT(t, ctx, cluster.SidecarFor(wls[0]))
	v2 := canary.ConnectT(t, ctx, cluster.SidecarFor(wls[1]))
	v2OnStable := stable.ConnectT(t, ctx, cluster.SidecarFor(wls[1])) // a proxy not yet moved to the canary

	h.policy("shop", "reviews-stable", v1alpha1.TelemetryPolicySpec{
		Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "reviews", "version": "v1"}}})
	h.policy("shop", "reviews-canary", v1alpha1.TelemetryPolicySpec{Mode: v1alpha1.ModeShadow, IstioRevision: "canary",
		Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "reviews", "version": "v2"}}})
	h.ready("shop", "reviews-stable", metav1.ConditionTrue, v1alpha1.ReasonApplied)
	h.ready("shop", "reviews-canary", metav1.ConditionTrue, v1alpha1.ReasonApplied)

	inbound := func(s cluster.Snapshot) []string {
		for _, ch := range s.HTTPFilterChains("virtualInbound") {
			if ch.ChainName == "0.0.0.0_8080" {
				return ch.HTTPFilters
			}
		}
		return nil
	}
	wait := func(sc *cluster.Sidecar, what string, cond func([]string) bool) {
		t.Helper()
		var last []string
		if _, err := sc.WaitFor(ctx, func(s cluster.Snapshot) bool { last = inbound(s); return cond(last) }); err != nil {
			t.Fatalf("%s: %v (inbound %v)", what, err, last)
		}
		t.Logf("%-46s inbound %v", what, last)
	}
	wait(v1, "v1 on the default istiod: LeanMesh", func(in []string) bool {
		return count(in, pluginconfig.PluginHTTP) == 1 && in[0] == pluginconfig.PluginHTTP && !slices.Contains(in, "istio.stats")
	})
	wait(v2, "v2 on the canary istiod: Shadow", func(in []string) bool {
		return count(in, pluginconfig.PluginHTTP) == 1 && in[0] == pluginconfig.PluginHTTP && slices.Contains(in, "istio.stats") && slices.Contains(in, "istio.metadata_exchange")
	})
	wait(v2OnStable, "v2 still on the default istiod: Istio only", func(in []string) bool {
		return len(in) > 0 && !slices.Contains(in, pluginconfig.PluginHTTP) && slices.Contains(in, "istio.stats")
	})
	// And the default istiod keeps ignoring the canary's objects.
	time.Sleep(2 * time.Second)
	if in := inbound(v2OnStable.Snapshot()); slices.Contains(in, pluginconfig.PluginHTTP) {
		t.Fatalf("the default istiod applied the canary's objects: %v", in)
	}
}
