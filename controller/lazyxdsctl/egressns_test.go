package lazyxdsctl

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/e2e/cluster"
)

// TestEgressNamespaceNotAllowed: the loop writes the lazy egress only in its
// EgressNamespaces (the generated RBAC grants those writes there only). A
// LazyXDS moved to an egress elsewhere is undone as if deleted — no Sidecar
// would be safe without its egress — and says why in Ready; moved back, it
// applies again. Runs under the generated RBAC, so a write outside the Role
// would also fail.
func TestEgressNamespaceNotAllowed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env := cluster.StartT(t, withCRDs)
	cfg := env.ServiceAccountConfigT(t, ctx, generatedRBAC, controllerNS, controllerSA)
	c := env.Client
	for _, ns := range []string{rootNS, shop, "elsewhere"} {
		if err := env.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range shopWorkloads[:2] {
		if _, err := env.CreateWorkload(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	policy := &v1alpha1.LazyXDS{ObjectMeta: metav1.ObjectMeta{Namespace: shop, Name: "lazy"}}
	if err := c.Create(ctx, policy); err != nil {
		t.Fatal(err)
	}
	startController(t, cfg, env)

	sidecar := "leanmesh-lazy-" + shopWorkloads[0].Name + "-0"
	applied := func() error {
		var sc networkingv1.Sidecar
		if err := c.Get(ctx, client.ObjectKey{Namespace: shop, Name: sidecar}, &sc); err != nil {
			return err
		}
		var dep appsv1.Deployment
		return c.Get(ctx, client.ObjectKey{Namespace: rootNS, Name: "leanmesh-lazy-egress"}, &dep)
	}
	poll(t, time.Minute, "Sidecar and egress in "+rootNS, applied)

	move := func(ns string) {
		t.Helper()
		if err := c.Get(ctx, client.ObjectKeyFromObject(policy), policy); err != nil {
			t.Fatal(err)
		}
		orig := policy.DeepCopy()
		policy.Spec.Egress.Namespace = ns
		if err := c.Patch(ctx, policy, client.MergeFrom(orig)); err != nil {
			t.Fatal(err)
		}
	}
	move("elsewhere")
	poll(t, time.Minute, "policy undone and refused", func() error {
		var sc networkingv1.Sidecar
		if err := c.Get(ctx, client.ObjectKey{Namespace: shop, Name: sidecar}, &sc); !apierrors.IsNotFound(err) {
			return fmt.Errorf("Sidecar still there (%v)", err)
		}
		var deps appsv1.DeploymentList
		if err := c.List(ctx, &deps, client.MatchingLabels{v1alpha1.LabelManagedBy: v1alpha1.ManagedBy}); err != nil {
			return err
		}
		if len(deps.Items) > 0 {
			return fmt.Errorf("egress Deployment %s/%s still there", deps.Items[0].Namespace, deps.Items[0].Name)
		}
		var p v1alpha1.LazyXDS
		if err := c.Get(ctx, client.ObjectKeyFromObject(policy), &p); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady)
		if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != v1alpha1.ReasonEgressNamespaceNotAllowed ||
			cond.ObservedGeneration != p.Generation || !strings.Contains(cond.Message, `"elsewhere"`) {
			return fmt.Errorf("Ready %+v", cond)
		}
		if meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionRoutingReproduced) != nil {
			return fmt.Errorf("conditions of an applied policy kept: %+v", p.Status.Conditions)
		}
		return nil
	})

	move(rootNS)
	poll(t, time.Minute, "policy applied again", func() error {
		if err := applied(); err != nil {
			return err
		}
		var p v1alpha1.LazyXDS
		if err := c.Get(ctx, client.ObjectKeyFromObject(policy), &p); err != nil {
			return err
		}
		if cond := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); cond == nil || cond.Status != metav1.ConditionTrue {
			return fmt.Errorf("Ready %+v", cond)
		}
		return nil
	})
}
