package scope

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
)

const root = "istio-system"

func policy(ns, name string, age time.Duration, labels map[string]string) v1alpha1.TelemetryPolicy {
	return v1alpha1.TelemetryPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(time.Unix(100000, 0).Add(-age))},
		Spec:       v1alpha1.TelemetryPolicySpec{Selector: v1alpha1.WorkloadSelector{MatchLabels: labels}},
	}
}

func TestSelectorsOverlap(t *testing.T) {
	cases := []struct {
		name string
		a, b map[string]string
		want bool
	}{
		{"both empty", nil, nil, true},
		{"empty vs one", map[string]string{"app": "a"}, nil, true},
		{"subset", map[string]string{"app": "a"}, map[string]string{"app": "a", "v": "1"}, true},
		{"same key, other value", map[string]string{"app": "a"}, map[string]string{"app": "b"}, false},
		{"disjoint keys", map[string]string{"app": "a"}, map[string]string{"tier": "web"}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := selectorsOverlap(c.a, c.b); got != c.want {
				t.Errorf("overlap(%v, %v) = %v", c.a, c.b, got)
			}
			if got := selectorsOverlap(c.b, c.a); got != c.want {
				t.Errorf("overlap(%v, %v) = %v (not symmetric)", c.b, c.a, got)
			}
		})
	}
}

// TestPrecedence follows Istio's Telemetry API: workload selector >
// namespace-wide > root namespace; same-rank overlaps are conflicts, the
// older one wins, as configCompareByCreationTime orders them.
func TestPrecedence(t *testing.T) {
	all := []v1alpha1.TelemetryPolicy{
		policy(root, "mesh", 5*time.Hour, nil),
		policy(root, "mesh-new", time.Hour, nil), // second mesh default: conflict
		policy(root, "tier", 4*time.Hour, map[string]string{"tier": "edge"}),
		policy("shop", "ns", 30*time.Minute, nil), // newer than mesh, still wins in shop
		policy("shop", "reviews", 20*time.Minute, map[string]string{"app": "reviews"}),
		policy("shop", "reviews-v2", 10*time.Minute, map[string]string{"app": "reviews", "version": "v2"}), // conflict with reviews
		policy("shop", "legacy", 3*time.Hour, map[string]string{"app": "legacy"}),
		// Same timestamp: ordered by name, then namespace, as Istio does.
		policy("pay", "b-tie", 2*time.Hour, map[string]string{"app": "pay"}),
		policy("pay", "a-tie", 2*time.Hour, map[string]string{"app": "pay"}),
	}
	r := New(root, all)

	conflicts := map[string][]Key{
		"istio-system/mesh-new": {{root, "mesh"}},
		"shop/reviews-v2":       {{"shop", "reviews"}},
		"pay/b-tie":             {{"pay", "a-tie"}},
	}
	for i := range all {
		k := Key{all[i].Namespace, all[i].Name}
		if got := r.Conflicts(k); !reflect.DeepEqual(got, conflicts[k.String()]) {
			t.Errorf("conflicts of %s = %v, want %v", k, got, conflicts[k.String()])
		}
	}

	cases := []struct {
		name string
		pod  Pod
		want string
	}{
		{"mesh default elsewhere", Pod{"other", "x", map[string]string{"app": "x"}}, "istio-system/mesh"},
		{"mesh selector beats mesh default", Pod{"other", "edge", map[string]string{"tier": "edge"}}, "istio-system/tier"},
		{"namespace beats root", Pod{"shop", "cart", map[string]string{"app": "cart", "tier": "edge"}}, "shop/ns"},
		{"workload beats namespace", Pod{"shop", "r1", map[string]string{"app": "reviews"}}, "shop/reviews"},
		{"conflicting policy governs nothing", Pod{"shop", "r2", map[string]string{"app": "reviews", "version": "v2"}}, "shop/reviews"},
		{"older workload policy", Pod{"shop", "l", map[string]string{"app": "legacy"}}, "shop/legacy"},
		{"tie by name", Pod{"pay", "p", map[string]string{"app": "pay"}}, "pay/a-tie"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := r.Governor(c.pod)
			if !ok || got.String() != c.want {
				t.Errorf("governor %v (%v), want %s", got, ok, c.want)
			}
		})
	}

	// The mesh policy's outcome lists what it governs and who overrides it.
	pods := []Pod{
		{"other", "x", map[string]string{"app": "x"}},
		{"shop", "r1", map[string]string{"app": "reviews"}},
	}
	o := r.Outcome(&all[0], pods)
	if len(o.Governed) != 1 || o.Governed[0].Name != "x" || o.Overridden[Key{"shop", "r1"}] != (Key{"shop", "reviews"}) {
		t.Errorf("outcome %+v", o)
	}
	if o := r.Outcome(&all[1], pods); len(o.Governed)+len(o.OverriddenPods) != 0 {
		t.Errorf("conflicting policy outcome %+v", o)
	}
}

// TestDeletedPoliciesTakeNoPart: a policy being deleted neither governs nor
// makes a newer one conflict.
func TestDeletedPoliciesTakeNoPart(t *testing.T) {
	old := policy("shop", "old", time.Hour, nil)
	now := metav1.Now()
	old.DeletionTimestamp = &now
	all := []v1alpha1.TelemetryPolicy{old, policy("shop", "new", time.Minute, nil)}
	r := New(root, all)
	if c := r.Conflicts(Key{"shop", "new"}); len(c) != 0 {
		t.Errorf("conflicts %v", c)
	}
	if g, _ := r.Governor(Pod{"shop", "p", nil}); g != (Key{"shop", "new"}) {
		t.Errorf("governor %v", g)
	}
}
