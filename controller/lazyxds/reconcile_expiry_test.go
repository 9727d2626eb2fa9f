package lazyxds

import (
	"testing"
	"time"
)

func TestExpireWorkload(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	g := NewGraph(Options{Now: func() time.Time { return now }})
	g.UpsertService(Service{Namespace: "shop", Host: "reviews.shop.svc.cluster.local", Ports: []Port{{9080, true}}})
	g.UpsertService(Service{Namespace: "shop", Host: "ratings.shop.svc.cluster.local", Ports: []Port{{9080, true}}})
	k := WorkloadKey{"shop", "productpage"}
	g.UpsertWorkload(Workload{Namespace: "shop", Name: "productpage", Labels: map[string]string{"app": "productpage"}, Lazy: true})
	g.Learn(k, "reviews.shop.svc.cluster.local", now.Add(-2*time.Hour))
	g.Learn(k, "ratings.shop.svc.cluster.local", now.Add(-time.Minute))
	g.Drain()
	if n := g.ExpireWorkload(k, now.Add(-time.Hour)); n != 1 {
		t.Fatalf("expired %d, want 1", n)
	}
	deps := g.Dependencies(k)
	if len(deps) != 1 || deps[0].Host != "ratings.shop.svc.cluster.local" || g.Stats().Dependencies != 1 {
		t.Errorf("left %v (count %d)", deps, g.Stats().Dependencies)
	}
	if ch := g.Drain(); len(ch) != 1 || ch[0].Workload != k {
		t.Errorf("drain after expiry: %v", ch)
	}
	if n := g.ExpireWorkload(k, now.Add(-time.Hour)); n != 0 {
		t.Errorf("second expiry dropped %d", n)
	}
}
