package install

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/leanmesh/leanmesh/filters/pluginconfig"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/proxystatus"
	"github.com/leanmesh/leanmesh/e2e/cluster"
)

// TestProxyVersionSkewOnIstiod: a pod keeps the 1.31 library label while
// its proxy moves to Istio 1.32 (a new proxy image, an in-place upgrade or
// a canary revision with an old label). On the real istiod its listeners
// must keep Istio's own telemetry (the patches removing istio.stats carry
// the same proxyVersion match as the one inserting leanmesh), and the
// policy must report the pod (ProxyVersionMatch=False, proxyVersionSkew).
func TestProxyVersionSkewOnIstiod(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env, istiod := cluster.StartIstiodT(t, ctx, withCRDs, "shop")
	metrics := NewMetrics(nil)
	h := runController(t, env, func(r *Reconciler) {
		r.Metrics = metrics
		r.Proxies = &proxystatus.Poller{URLs: []string{"http://" + istiod.MonitoringAddr}}
	})
	wls := map[string]*cluster.WorkloadObjects{}
	sidecars := map[string]*cluster.Sidecar{}
	connect := func(app, version string) {
		t.Helper()
		if old := sidecars[app]; old != nil {
			old.Close()
		}
		opts := cluster.SidecarFor(wls[app])
		opts.IstioVersion = version
		sidecars[app] = istiod.ConnectT(t, ctx, opts)
	}
	for i, app := range []string{"reviews", "details"} {
		wls[app] = libraryWorkload(t, ctx, env, cluster.Workload{Namespace: "shop", Name: app, IP: fmt.Sprintf("10.244.3.%d", 10+i)})
		connect(app, h.rel.Istio)
	}
	chains := func(s cluster.Snapshot) [][]string {
		var out [][]string
		for _, l := range []string{"virtualInbound", "0.0.0.0_8080"} {
			for _, ch := range s.HTTPFilterChains(l) {
				if l == "0.0.0.0_8080" || ch.ChainName == "0.0.0.0_8080" {
					out = append(out, ch.HTTPFilters)
				}
			}
		}
		return out
	}
	leanmesh := func(in []string) bool {
		return count(in, pluginconfig.PluginHTTP) == 1 && !slices.Contains(in, "istio.stats") && !slices.Contains(in, "istio.metadata_exchange")
	}
	istio := func(in []string) bool {
		return !slices.Contains(in, pluginconfig.PluginHTTP) && slices.Contains(in, "istio.stats") && slices.Contains(in, "istio.metadata_exchange")
	}
	waitLDS := func(app, what string, cond func([]string) bool) {
		t.Helper()
		var last [][]string
		if _, err := sidecars[app].WaitFor(ctx, func(s cluster.Snapshot) bool {
			last = chains(s)
			if len(last) < 2 { // inbound and outbound 8080
				return false
			}
			for _, c := range last {
				if !cond(c) {
					return false
				}
			}
			return true
		}); err != nil {
			t.Fatalf("%s: %s: %v (chains %v)", app, what, err, last)
		}
		t.Logf("%-8s %-40s %v", app, what, last)
	}
	status := func() v1alpha1.TelemetryPolicy {
		var p v1alpha1.TelemetryPolicy
		if err := h.c.Get(ctx, keyOf("shop", "mesh"), &p); err != nil {
			t.Fatal(err)
		}
		return p
	}

	h.policy("shop", "mesh", v1alpha1.TelemetryPolicySpec{})
	h.ready("shop", "mesh", metav1.ConditionTrue, v1alpha1.ReasonApplied)
	waitLDS("reviews", "Istio "+h.rel.Istio+": LeanMesh", leanmesh)
	waitLDS("details", "Istio "+h.rel.Istio+": LeanMesh", leanmesh)
	h.eventually("ProxyVersionMatch=True", func() error {
		c := meta.FindStatusCondition(status().Status.Conditions, v1alpha1.ConditionProxyVersionMatch)
		if c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("%+v", c)
		}
		return nil
	})

	// The reviews pod's proxy restarts as Istio 1.32 with the old label.
	moved := time.Now()
	connect("reviews", "1.32.0")
	waitLDS("reviews", "Istio 1.32.0: Istio's telemetry, no blackout", istio)
	waitLDS("details", "Istio "+h.rel.Istio+": still LeanMesh", leanmesh)
	var reported time.Duration
	h.eventually("reviews reported as skewed", func() error {
		p := status()
		c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionProxyVersionMatch)
		want := []v1alpha1.WorkloadRef{{Namespace: "shop", Name: "reviews", Pods: 1, ProxyVersion: "1.32.0"}}
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonProxyVersionSkew || !equality.Semantic.DeepEqual(p.Status.ProxyVersionSkew, want) {
			return fmt.Errorf("condition %+v, skew %+v", c, p.Status.ProxyVersionSkew)
		}
		reported = time.Since(moved)
		t.Logf("ProxyVersionMatch=False: %s", c.Message)
		return nil
	})
	t.Logf("skew reported %s after the proxy reconnected as 1.32.0", reported.Round(time.Millisecond))
	if got := gauge(t, metrics.skew.WithLabelValues("shop", "mesh")); got != 1 {
		t.Errorf("leanmesh_controller_pods_proxy_version_skew = %v, want 1", got)
	}

	// Back on a matching proxy: LeanMesh again, no skew.
	connect("reviews", h.rel.Istio)
	waitLDS("reviews", "Istio "+h.rel.Istio+" again: LeanMesh", leanmesh)
	h.eventually("skew cleared", func() error {
		p := status()
		if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionProxyVersionMatch); c == nil || c.Status != metav1.ConditionTrue || len(p.Status.ProxyVersionSkew) > 0 {
			return fmt.Errorf("condition %+v, skew %+v", c, p.Status.ProxyVersionSkew)
		}
		return nil
	})
}
