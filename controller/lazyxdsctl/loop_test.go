package lazyxdsctl

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	networkingapi "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/e2e/cluster"
)

const shop = "shop"

func host(name string) string { return shop + "/" + name + ".shop.svc.cluster.local" }

// shopWorkloads: four HTTP services, a canary only reached through the
// reviews VirtualService, and one TCP service (never lazy).
var shopWorkloads = []cluster.Workload{
	{Namespace: shop, Name: "productpage", IP: "10.244.1.11", Ports: []cluster.Port{{Name: "http", Port: 9080}}},
	{Namespace: shop, Name: "reviews", IP: "10.244.1.12", Ports: []cluster.Port{{Name: "http", Port: 9080}}},
	{Namespace: shop, Name: "reviews-canary", IP: "10.244.1.13", Ports: []cluster.Port{{Name: "http", Port: 9080}}},
	{Namespace: shop, Name: "ratings", IP: "10.244.1.14", Ports: []cluster.Port{{Name: "http", Port: 9080}}},
	{Namespace: shop, Name: "details", IP: "10.244.1.15", Ports: []cluster.Port{{Name: "http-api", Port: 9080}}},
	{Namespace: shop, Name: "mysql", IP: "10.244.1.16", Ports: []cluster.Port{{Name: "tcp-mysql", Port: 3306}}},
}

// TestLoopAgainstAPIServer runs the loop in a manager against a real
// kube-apiserver: baseline Sidecars, learning from a real ALS stream, a
// restart in the middle of learning, service deletion and a user Sidecar.
func TestLoopAgainstAPIServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	env := cluster.StartT(t, withCRDs)
	t.Logf("control plane up in %s", time.Since(start).Round(time.Millisecond))
	cfg := env.ServiceAccountConfigT(t, ctx, generatedRBAC, controllerNS, controllerSA)
	c := env.Client
	for _, ns := range []string{rootNS, shop} {
		if err := env.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range shopWorkloads {
		if _, err := env.CreateWorkload(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	vs := &networkingv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Namespace: shop, Name: "reviews"},
		Spec: networkingapi.VirtualService{
			Hosts: []string{"reviews"},
			Http: []*networkingapi.HTTPRoute{{Route: []*networkingapi.HTTPRouteDestination{
				{Destination: &networkingapi.Destination{Host: "reviews"}, Weight: 90},
				{Destination: &networkingapi.Destination{Host: "reviews-canary"}, Weight: 10},
			}}},
		},
	}
	if err := c.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	policy := &v1alpha1.LazyXDS{ObjectMeta: metav1.ObjectMeta{Namespace: shop, Name: "lazy"}}
	if err := c.Create(ctx, policy); err != nil {
		t.Fatal(err)
	}

	top := t
	ctl := startController(t, cfg, env)
	t.Logf("loop ready in %s", time.Since(start).Round(time.Millisecond))
	const caller = "leanmesh-lazy-productpage-0"
	baseline := []string{
		"default/kubernetes.default.svc.cluster.local", // https: not HTTP, always visible
		"istio-system/*",
		"istio-system/leanmesh-lazy-egress.istio-system.svc.cluster.local",
		host("mysql"), // TCP: always visible
	}
	hostsOf := func(name string) []string {
		t.Helper()
		h, _, err := sidecarHostsOf(ctx, c, shop, name)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	// checkAcknowledged: every learned host in a Sidecar is in the snapshot.
	checkAcknowledged := func(when string) {
		t.Helper()
		deps, err := persistedDeps(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range shopWorkloads {
			for _, h := range hostsOf("leanmesh-lazy-" + w.Name + "-0") {
				if slices.Contains(baseline, h) || strings.HasSuffix(h, "reviews-canary.shop.svc.cluster.local") {
					continue
				}
				_, fqdn, _ := strings.Cut(h, "/")
				if !slices.Contains(deps[shop+"/"+w.Name+"-0"], fqdn) {
					t.Errorf("%s: Sidecar of %s holds %s, snapshot only %v", when, w.Name, h, deps[shop+"/"+w.Name+"-0"])
				}
			}
		}
	}

	t.Run("BaselineSidecars", func(t *testing.T) {
		d := poll(t, 30*time.Second, "a baseline Sidecar per lazy workload", func() error {
			for _, w := range shopWorkloads {
				if got := hostsOf("leanmesh-lazy-" + w.Name + "-0"); !slices.Equal(got, baseline) {
					return fmt.Errorf("%s: %v", w.Name, got)
				}
			}
			return nil
		})
		t.Logf("6 baseline Sidecars %s after ready: %v", d.Round(time.Millisecond), baseline)
		_, sc, _ := sidecarHostsOf(ctx, c, shop, caller)
		if sc.Spec.WorkloadSelector.GetLabels()["app"] != "productpage" || len(sc.OwnerReferences) != 1 || sc.OwnerReferences[0].Kind != "LazyXDS" ||
			sc.Labels["app.kubernetes.io/managed-by"] != "leanmesh" {
			t.Errorf("Sidecar metadata/selector: labels %v owners %v selector %v", sc.Labels, sc.OwnerReferences, sc.Spec.WorkloadSelector)
		}
		poll(t, 30*time.Second, "redirect and egress objects", func() error {
			var ef networkingv1alpha3.EnvoyFilter
			if err := c.Get(ctx, client.ObjectKey{Namespace: shop, Name: "leanmesh-lazy-lazy"}, &ef); err != nil {
				return err
			}
			var dep appsv1.Deployment
			if err := c.Get(ctx, client.ObjectKey{Namespace: rootNS, Name: "leanmesh-lazy-egress"}, &dep); err != nil {
				return err
			}
			var svc corev1.Service
			if err := c.Get(ctx, client.ObjectKey{Namespace: rootNS, Name: "leanmesh-lazy-egress"}, &svc); err != nil {
				return err
			}
			var ports []int32
			for _, p := range svc.Spec.Ports {
				ports = append(ports, p.Port)
			}
			if !slices.Equal(ports, []int32{80, 9080}) {
				return fmt.Errorf("egress Service ports %v", ports)
			}
			var egf networkingv1alpha3.EnvoyFilter
			return c.Get(ctx, client.ObjectKey{Namespace: rootNS, Name: "leanmesh-lazy-egress"}, &egf)
		})
		poll(t, 30*time.Second, "status", func() error {
			var p v1alpha1.LazyXDS
			if err := c.Get(ctx, client.ObjectKeyFromObject(policy), &p); err != nil {
				return err
			}
			r := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady)
			if r == nil || r.Status != metav1.ConditionTrue || r.ObservedGeneration != p.Generation || p.Status.Workloads != 6 {
				return fmt.Errorf("status %+v", p.Status)
			}
			return nil
		})
	})

	als := dialALS(t, ctl.alsAddr)
	t.Run("LearnFromALS", func(t *testing.T) {
		sent := time.Now()
		als.send(t, "10.244.1.11", "outbound|9080||reviews.shop.svc.cluster.local", "reviews:9080")
		poll(t, 20*time.Second, "productpage learns reviews and the VirtualService target", func() error {
			got := hostsOf(caller)
			if !slices.Contains(got, host("reviews")) || !slices.Contains(got, host("reviews-canary")) {
				return fmt.Errorf("%v", got)
			}
			return nil
		})
		t.Logf("ALS entry → Sidecar with %s: %s", host("reviews"), time.Since(sent).Round(time.Millisecond))
		if got := hostsOf("leanmesh-lazy-ratings-0"); !slices.Equal(got, baseline) {
			t.Errorf("another workload's Sidecar changed: %v", got)
		}
		checkAcknowledged("after learning")
		// The authority alone (no usable cluster) resolves through the caller's search path.
		sent = time.Now()
		als.send(t, "10.244.1.14", "", "details.shop:9080")
		poll(t, 20*time.Second, "ratings learns details from the authority", func() error {
			if got := hostsOf("leanmesh-lazy-ratings-0"); !slices.Contains(got, host("details")) {
				return fmt.Errorf("%v", got)
			}
			return nil
		})
		t.Logf("ALS entry (authority only) → Sidecar: %s", time.Since(sent).Round(time.Millisecond))
	})

	t.Run("RestartMidLearning", func(t *testing.T) {
		// A new dependency is logged and the controller killed at once:
		// whatever was acknowledged must survive, the rest is re-learned.
		ctl.loop.simulateKill.Store(true)
		als.send(t, "10.244.1.11", "outbound|9080||ratings.shop.svc.cluster.local", "ratings:9080")
		time.Sleep(20 * time.Millisecond)
		als.close()
		ctl.stop(t)
		before, err := persistedDeps(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("snapshot at stop: %v", before)
		if !slices.Contains(before[shop+"/productpage-0"], "reviews.shop.svc.cluster.local") {
			t.Fatalf("acknowledged dependency missing from the snapshot: %v", before)
		}
		checkAcknowledged("after stop")
		ratingsAcked := slices.Contains(before[shop+"/productpage-0"], "ratings.shop.svc.cluster.local")

		restart := time.Now()
		ctl2 := startController(top, cfg, env) // outlives this subtest
		t.Logf("restarted loop ready in %s", time.Since(restart).Round(time.Millisecond))
		time.Sleep(2500 * time.Millisecond) // a few flushes of the new loop
		got := hostsOf(caller)
		for _, h := range []string{host("reviews"), host("reviews-canary")} {
			if !slices.Contains(got, h) {
				t.Errorf("restart lost %s: %v", h, got)
			}
		}
		if ratingsAcked {
			// Persisted before the stop, but the old loop may have been
			// stopped between the snapshot and the Sidecar write: the new
			// one must write it, in its own time.
			poll(t, 20*time.Second, "acknowledged ratings in the Sidecar after restart", func() error {
				if got := hostsOf(caller); !slices.Contains(got, host("ratings")) {
					return fmt.Errorf("restart lost acknowledged ratings: %v", got)
				}
				return nil
			})
		}
		after, err := persistedDeps(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		for w, hs := range before {
			for _, h := range hs {
				if !slices.Contains(after[w], h) {
					t.Errorf("snapshot lost %s → %s after restart: %v", w, h, after)
				}
			}
		}
		checkAcknowledged("after restart")
		t.Logf("ratings acknowledged before the kill: %v", ratingsAcked)

		// Learning continues: the next call through the egress is logged again.
		als2 := dialALS(t, ctl2.alsAddr)
		sent := time.Now()
		als2.send(t, "10.244.1.11", "outbound|9080||ratings.shop.svc.cluster.local", "ratings:9080")
		als2.send(t, "10.244.1.11", "outbound|9080||details.shop.svc.cluster.local", "details:9080")
		poll(t, 20*time.Second, "new learning after restart", func() error {
			got := hostsOf(caller)
			if !slices.Contains(got, host("ratings")) || !slices.Contains(got, host("details")) {
				return fmt.Errorf("%v", got)
			}
			return nil
		})
		t.Logf("ALS → Sidecar after restart: %s", time.Since(sent).Round(time.Millisecond))
		checkAcknowledged("after re-learning")
		ctl = ctl2
	})

	t.Run("ServiceDeleted", func(t *testing.T) {
		if err := c.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: shop, Name: "details"}}); err != nil {
			t.Fatal(err)
		}
		d := poll(t, 20*time.Second, "details leaves the Sidecars", func() error {
			for _, name := range []string{caller, "leanmesh-lazy-ratings-0"} {
				if got := hostsOf(name); slices.Contains(got, host("details")) {
					return fmt.Errorf("%s: %v", name, got)
				}
			}
			return nil
		})
		t.Logf("service deleted → gone from Sidecars in %s", d.Round(time.Millisecond))
	})

	t.Run("UserSidecarConflict", func(t *testing.T) {
		user := &networkingv1.Sidecar{
			ObjectMeta: metav1.ObjectMeta{Namespace: shop, Name: "ratings-own"},
			Spec: networkingapi.Sidecar{
				WorkloadSelector: &networkingapi.WorkloadSelector{Labels: map[string]string{"app": "ratings"}},
				Egress:           []*networkingapi.IstioEgressListener{{Hosts: []string{"./*", "istio-system/*"}}},
			},
		}
		if err := c.Create(ctx, user); err != nil {
			t.Fatal(err)
		}
		poll(t, 20*time.Second, "Conflict condition, leanmesh's Sidecar for ratings removed", func() error {
			var p v1alpha1.LazyXDS
			if err := c.Get(ctx, client.ObjectKeyFromObject(policy), &p); err != nil {
				return err
			}
			cond := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionConflict)
			if cond == nil || cond.Status != metav1.ConditionTrue || !strings.Contains(cond.Message, "shop/ratings-0") {
				return fmt.Errorf("conflict condition %+v", cond)
			}
			if p.Status.Workloads != 5 {
				return fmt.Errorf("workloads %d", p.Status.Workloads)
			}
			if h := hostsOf("leanmesh-lazy-ratings-0"); h != nil {
				return fmt.Errorf("leanmesh Sidecar still there: %v", h)
			}
			return nil
		})
		var got networkingv1.Sidecar
		if err := c.Get(ctx, client.ObjectKeyFromObject(user), &got); err != nil {
			t.Fatal(err)
		}
		if got.Generation != 1 || !slices.Equal(got.Spec.Egress[0].Hosts, []string{"./*", "istio-system/*"}) || len(got.ManagedFields) != 1 {
			t.Errorf("user Sidecar touched: gen %d hosts %v managers %d", got.Generation, got.Spec.Egress[0].Hosts, len(got.ManagedFields))
		}
		// Removing the user's Sidecar makes the workload lazy again, with what it had learned.
		if err := c.Delete(ctx, user); err != nil {
			t.Fatal(err)
		}
		poll(t, 20*time.Second, "ratings lazy again", func() error {
			if h := hostsOf("leanmesh-lazy-ratings-0"); !slices.Contains(h, "istio-system/*") {
				return fmt.Errorf("%v", h)
			}
			return nil
		})
	})

	t.Run("Metrics", func(t *testing.T) {
		mfs, err := ctl.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, mf := range mfs {
			seen[mf.GetName()] = true
			if mf.GetName() == "leanmesh_lazyxds_learn_to_sidecar_seconds" {
				h := mf.GetMetric()[0].GetHistogram()
				if h.GetSampleCount() > 0 {
					t.Logf("learn→Sidecar (restarted loop): %d samples, mean %.3fs", h.GetSampleCount(), h.GetSampleSum()/float64(h.GetSampleCount()))
				}
			}
		}
		for _, n := range []string{"leanmesh_lazyxds_sidecar_writes_total", "leanmesh_lazyxds_learn_to_sidecar_seconds",
			"leanmesh_lazyxds_graph_objects", "leanmesh_lazyxds_als_entries_received_total", "leanmesh_lazyxds_snapshot_writes_total"} {
			if !seen[n] {
				t.Errorf("metric %s not registered", n)
			}
		}
	})

	t.Run("PolicyDeleted", func(t *testing.T) {
		if err := c.Delete(ctx, policy); err != nil {
			t.Fatal(err)
		}
		d := poll(t, 20*time.Second, "Sidecars and redirect removed", func() error {
			var scs networkingv1.SidecarList
			if err := c.List(ctx, &scs, client.InNamespace(shop), client.MatchingLabels{v1alpha1.LabelComponent: ComponentSidecar}); err != nil {
				return err
			}
			if len(scs.Items) > 0 {
				return fmt.Errorf("%d Sidecars left", len(scs.Items))
			}
			var efs networkingv1alpha3.EnvoyFilterList
			if err := c.List(ctx, &efs, client.MatchingLabels{v1alpha1.LabelComponent: ComponentRedirect}); err != nil {
				return err
			}
			if len(efs.Items) > 0 {
				return fmt.Errorf("%d redirects left", len(efs.Items))
			}
			return nil
		})
		t.Logf("policy deleted → its objects gone in %s", d.Round(time.Millisecond))
	})
}
