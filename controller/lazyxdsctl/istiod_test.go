package lazyxdsctl

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/e2e/cluster"
)

// TestIstiodPushesLearnedClusterToCallerOnly runs the loop next to a real
// istiod: a lazy workload's proxy starts with the baseline clusters only, and
// one access log later istiod pushes the learned service's cluster to that
// proxy and no other.
func TestIstiodPushesLearnedClusterToCallerOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env, istiod := cluster.StartIstiodT(t, ctx, withCRDs, shop)
	cfg := env.ServiceAccountConfigT(t, ctx, generatedRBAC, controllerNS, controllerSA)
	objs := map[string]*cluster.WorkloadObjects{}
	for _, w := range shopWorkloads {
		o, err := env.CreateWorkload(ctx, w)
		if err != nil {
			t.Fatal(err)
		}
		objs[w.Name] = o
	}
	caller := istiod.ConnectT(t, ctx, cluster.SidecarFor(objs["productpage"]))
	other := istiod.ConnectT(t, ctx, cluster.SidecarFor(objs["ratings"]))
	reviews := objs["reviews"].Workload.OutboundCluster(9080)
	full, err := caller.WaitFor(ctx, func(s cluster.Snapshot) bool { return s.Has(cluster.TypeCluster, reviews) })
	if err != nil {
		t.Fatal(err)
	}
	fullOther, _ := other.WaitFor(ctx, func(s cluster.Snapshot) bool { return s.Has(cluster.TypeCluster, reviews) })
	t.Logf("before LazyXDS: %d clusters (%d B CDS)", len(full.Names(cluster.TypeCluster)), full.Types[cluster.TypeCluster].Bytes)

	if err := env.Client.Create(ctx, &v1alpha1.LazyXDS{ObjectMeta: metav1.ObjectMeta{Namespace: shop, Name: "lazy"}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ctl := startController(t, cfg, env)

	// Baseline: no outbound cluster of a lazy service, the egress's present,
	// the TCP service still visible.
	minimal := func(s cluster.Snapshot) error {
		var lazy []string
		for _, n := range s.Names(cluster.TypeCluster) {
			if strings.HasPrefix(n, "outbound|") && strings.HasSuffix(n, ".shop.svc.cluster.local") && !strings.Contains(n, "mysql") {
				lazy = append(lazy, n)
			}
		}
		if len(lazy) > 0 {
			return fmt.Errorf("lazy services visible: %v", lazy)
		}
		for _, want := range []string{"outbound|9080||leanmesh-lazy-egress.istio-system.svc.cluster.local", objs["mysql"].Workload.OutboundCluster(3306)} {
			if !s.Has(cluster.TypeCluster, want) {
				return fmt.Errorf("no %s in %v", want, s.Names(cluster.TypeCluster))
			}
		}
		return nil
	}
	var last error
	base, err := caller.WaitFor(ctx, func(s cluster.Snapshot) bool { last = minimal(s); return last == nil })
	if err != nil {
		t.Fatalf("minimal CDS: %v (last: %v)", err, last)
	}
	t.Logf("lazy baseline %s after controller start: %d clusters (%d B CDS) %v", time.Since(start).Round(time.Millisecond),
		len(base.Names(cluster.TypeCluster)), base.Types[cluster.TypeCluster].Bytes, base.Names(cluster.TypeCluster))
	if _, err := other.WaitFor(ctx, func(s cluster.Snapshot) bool { last = minimal(s); return last == nil }); err != nil {
		t.Fatalf("other's minimal CDS: %v (last: %v)", err, last)
	}
	t.Logf("CDS of the other proxy: %d → %d clusters", len(fullOther.Names(cluster.TypeCluster)), len(other.Snapshot().Names(cluster.TypeCluster)))
	// The redirect reached the caller's HTTP route configuration for port 9080.
	if _, err := caller.WaitFor(ctx, func(s cluster.Snapshot) bool {
		r, ok := s.Types[cluster.TypeRoute].Resources["9080"]
		return ok && r.Contains("leanmesh-lazy-redirect") && r.Contains("leanmesh-lazy-egress")
	}); err != nil {
		t.Fatalf("redirect route in RDS 9080: %v", err)
	}

	otherPushes := other.Snapshot().Pushes(cluster.TypeCluster)
	als := dialALS(t, ctl.alsAddr)
	sent := time.Now()
	als.send(t, objs["productpage"].Workload.IP, reviews, "reviews:9080")
	got, err := caller.WaitFor(ctx, func(s cluster.Snapshot) bool { return s.Has(cluster.TypeCluster, reviews) })
	if err != nil {
		t.Fatal(err)
	}
	learn := time.Since(sent)
	t.Logf("ALS entry → %s in the caller's CDS: %s (%d clusters, %d B)", reviews, learn.Round(time.Millisecond),
		len(got.Names(cluster.TypeCluster)), got.Types[cluster.TypeCluster].Bytes)
	if got.Has(cluster.TypeCluster, objs["ratings"].Workload.OutboundCluster(9080)) {
		t.Errorf("the caller received a service it never called")
	}
	time.Sleep(2 * time.Second) // give istiod time to push anything it would
	o := other.Snapshot()
	if o.Has(cluster.TypeCluster, reviews) {
		t.Errorf("the other lazy proxy received %s", reviews)
	}
	t.Logf("other proxy: CDS pushes %d → %d, still %d clusters", otherPushes, o.Pushes(cluster.TypeCluster), len(o.Names(cluster.TypeCluster)))
}
