package lazyxdsctl

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	networkingapi "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/lazyxds"
	"github.com/leanmesh/leanmesh/e2e/cluster"
)

// egressWeights finds the virtual host of fqdn in the egress's RDS and
// returns the weighted clusters of its routes ("cluster=weight", per route).
func egressWeights(s cluster.Snapshot, fqdn string) ([][]string, string) {
	var names []string
	for name, r := range s.Types[cluster.TypeRoute].Resources {
		names = append(names, name)
		rc, ok := r.Msg.(*routev3.RouteConfiguration)
		if !ok {
			continue
		}
		for _, vh := range rc.GetVirtualHosts() {
			if !slices.Contains(vh.GetDomains(), fqdn) {
				continue
			}
			var out [][]string
			for _, rt := range vh.GetRoutes() {
				var ws []string
				if wc := rt.GetRoute().GetWeightedClusters(); wc != nil {
					for _, c := range wc.GetClusters() {
						ws = append(ws, fmt.Sprintf("%s=%d", c.GetName(), c.GetWeight().GetValue()))
					}
				} else if c := rt.GetRoute().GetCluster(); c != "" {
					ws = append(ws, c+"=100")
				}
				out = append(out, ws)
			}
			return out, rc.GetName() + "/" + vh.GetName()
		}
	}
	slices.Sort(names)
	return nil, fmt.Sprintf("no virtual host for %s in route configs %v", fqdn, names)
}

// TestEgressFollowsUserVirtualService runs the loop next to a real istiod and
// an ADS observer impersonating the lazy egress gateway (router mode): the
// user's VirtualService for a lazy host, never bound to the egress by the
// user, reaches the egress's RDS with its weights through the controller's
// copy; editing it updates the egress; rules the egress cannot follow are
// reported in the policy's status with a condition and an event; the user's
// object is never written.
func TestEgressFollowsUserVirtualService(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env, istiod := cluster.StartIstiodT(t, ctx, withCRDs, rootNS, shop)
	cfg := env.ServiceAccountConfigT(t, ctx, generatedRBAC, controllerNS, controllerSA)
	c := env.Client
	for _, w := range shopWorkloads {
		if _, err := env.CreateWorkload(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	// The egress pod, as the controller's Deployment would run it (no kubelet
	// here). Its own Service is TCP so it stays out of the lazy graph.
	egressLabels := map[string]string{"app": lazyxds.DefaultEgressName, "istio": lazyxds.DefaultEgressName}
	eg, err := env.CreateWorkload(ctx, cluster.Workload{Namespace: rootNS, Name: "egress-pod", PodName: lazyxds.DefaultEgressName + "-0", IP: "10.244.9.9",
		Labels: egressLabels, Ports: []cluster.Port{{Name: "tcp-admin", Port: 15000}}})
	if err != nil {
		t.Fatal(err)
	}
	vs := &networkingv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Namespace: shop, Name: "reviews"},
		Spec: networkingapi.VirtualService{
			Hosts: []string{"reviews"},
			Http: []*networkingapi.HTTPRoute{
				{Name: "canary-for-productpage", Match: []*networkingapi.HTTPMatchRequest{{SourceLabels: map[string]string{"app": "productpage"}}},
					Route: []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: "reviews-canary"}}}},
				{Name: "split", Route: []*networkingapi.HTTPRouteDestination{
					{Destination: &networkingapi.Destination{Host: "reviews"}, Weight: 90},
					{Destination: &networkingapi.Destination{Host: "reviews-canary"}, Weight: 10},
				}, Timeout: nil},
			},
		},
	}
	if err := c.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	policy := &v1alpha1.LazyXDS{ObjectMeta: metav1.ObjectMeta{Namespace: shop, Name: "lazy"}}
	if err := c.Create(ctx, policy); err != nil {
		t.Fatal(err)
	}
	startController(t, cfg, env)

	gw := istiod.ConnectT(t, ctx, cluster.GatewayFor(eg))
	const fqdn = "reviews.shop.svc.cluster.local"
	rev, canary := "outbound|9080||reviews.shop.svc.cluster.local", "outbound|9080||reviews-canary.shop.svc.cluster.local"
	wantRoutes := func(want string) {
		t.Helper()
		var last string
		start := time.Now()
		if _, err := gw.WaitFor(ctx, func(s cluster.Snapshot) bool {
			ws, where := egressWeights(s, fqdn)
			last = fmt.Sprint(ws, " at ", where)
			return fmt.Sprint(ws) == want
		}); err != nil {
			t.Fatalf("egress RDS for %s: want %s, last %s: %v", fqdn, want, last, err)
		}
		t.Logf("egress RDS: %s %s after the change", last, time.Since(start).Round(time.Millisecond))
	}
	// The sourceLabels route cannot apply at the egress: only the split is copied.
	wantRoutes(fmt.Sprint([][]string{{rev + "=90", canary + "=10"}}))

	var copyVS networkingv1.VirtualService
	if err := c.Get(ctx, client.ObjectKey{Namespace: shop, Name: lazyxds.EgressVSName("reviews")}, &copyVS); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(copyVS.Spec.Gateways, []string{"istio-system/leanmesh-lazy-egress"}) || !slices.Equal(copyVS.Spec.ExportTo, []string{"istio-system"}) ||
		len(copyVS.OwnerReferences) != 1 || copyVS.OwnerReferences[0].Name != "reviews" {
		t.Errorf("copy: gateways %v exportTo %v owners %v", copyVS.Spec.Gateways, copyVS.Spec.ExportTo, copyVS.OwnerReferences)
	}

	poll(t, 20*time.Second, "status reports the sourceLabels rule", func() error {
		var p v1alpha1.LazyXDS
		if err := c.Get(ctx, client.ObjectKeyFromObject(policy), &p); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionRoutingReproduced)
		if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != v1alpha1.ReasonUnreproducibleRoutes ||
			len(p.Status.UnreproducibleRoutes) != 1 || !strings.Contains(p.Status.UnreproducibleRoutes[0], "shop/reviews: http route canary-for-productpage") ||
			p.Status.EgressVirtualServices != 1 {
			return fmt.Errorf("condition %+v, routes %v, copies %d", cond, p.Status.UnreproducibleRoutes, p.Status.EgressVirtualServices)
		}
		var evs eventsv1.EventList
		if err := c.List(ctx, &evs, client.InNamespace(shop)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == v1alpha1.ReasonUnreproducibleRoutes && strings.Contains(e.Note, "canary-for-productpage") {
				return nil
			}
		}
		return fmt.Errorf("no %s event", v1alpha1.ReasonUnreproducibleRoutes)
	})

	// The user edits the split and drops the per-caller rule: the egress follows.
	var cur networkingv1.VirtualService
	if err := c.Get(ctx, client.ObjectKeyFromObject(vs), &cur); err != nil {
		t.Fatal(err)
	}
	cur.Spec.Http = cur.Spec.Http[1:]
	cur.Spec.Http[0].Route[0].Weight, cur.Spec.Http[0].Route[1].Weight = 50, 50
	if err := c.Update(ctx, &cur); err != nil {
		t.Fatal(err)
	}
	wantRoutes(fmt.Sprint([][]string{{rev + "=50", canary + "=50"}}))
	poll(t, 20*time.Second, "RoutingReproduced=True", func() error {
		var p v1alpha1.LazyXDS
		if err := c.Get(ctx, client.ObjectKeyFromObject(policy), &p); err != nil {
			return err
		}
		if cond := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionRoutingReproduced); cond == nil || cond.Status != metav1.ConditionTrue || len(p.Status.UnreproducibleRoutes) != 0 {
			return fmt.Errorf("%+v %v", cond, p.Status.UnreproducibleRoutes)
		}
		return nil
	})
	// The user's object has one writer: the user.
	if err := c.Get(ctx, client.ObjectKeyFromObject(vs), &cur); err != nil {
		t.Fatal(err)
	}
	for _, mf := range cur.ManagedFields {
		if mf.Manager == v1alpha1.FieldOwner {
			t.Errorf("leanmesh wrote the user's VirtualService: %+v", mf)
		}
	}
	if len(cur.Spec.Gateways) != 0 || len(cur.Spec.ExportTo) != 0 {
		t.Errorf("user's VirtualService changed: gateways %v exportTo %v", cur.Spec.Gateways, cur.Spec.ExportTo)
	}
	// Deleting the user's VirtualService removes the copy and the egress's routes for it.
	if err := c.Delete(ctx, &cur); err != nil {
		t.Fatal(err)
	}
	poll(t, 20*time.Second, "copy deleted", func() error {
		err := c.Get(ctx, client.ObjectKey{Namespace: shop, Name: lazyxds.EgressVSName("reviews")}, &copyVS)
		if err == nil {
			return fmt.Errorf("copy still there")
		}
		return client.IgnoreNotFound(err)
	})
	if _, err := gw.WaitFor(ctx, func(s cluster.Snapshot) bool { ws, _ := egressWeights(s, fqdn); return ws == nil }); err != nil {
		t.Fatalf("egress still routes %s: %v", fqdn, err)
	}
}
