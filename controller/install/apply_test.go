package install

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/render"
	"github.com/leanmesh/leanmesh/e2e/cluster"
)

// TestApplyAllOrNothing: when the API server refuses one of a policy's
// objects for a reason other than size (here a ValidatingAdmissionPolicy,
// the API server's own admission, refusing the policy's "-http"
// EnvoyFilter), the objects applied before it do not stay changed: either
// nothing is written (the refusal shows in the server-side dry run) or the
// earlier ones are rolled back (the refusal only comes when persisting),
// and Ready=False ApplyFailed names the object and the reason.
func TestApplyAllOrNothing(t *testing.T) {
	h := startHarness(t)
	h.pod("shop", "atomic-1", map[string]string{"app": "atomic"}, true)
	h.policy("shop", "atomic", v1alpha1.TelemetryPolicySpec{Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "atomic"}}})
	h.ready("shop", "atomic", metav1.ConditionTrue, v1alpha1.ReasonApplied)
	objects := []string{"EnvoyFilter shop/leanmesh-atomic-exposition", "EnvoyFilter shop/leanmesh-atomic-http"}
	h.waitOwned("shop", "atomic", objects...)
	spec := func(name string) string {
		b, err := json.Marshal(&h.envoyFilter("shop", name).Spec)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	gen1Exposition, gen1HTTP := spec("leanmesh-atomic-exposition"), spec("leanmesh-atomic-http")
	// Applied in name order: exposition first, then http, the one refused.

	// refuse installs a ValidatingAdmissionPolicy denying writes of the
	// EnvoyFilters named leanmesh-atomic*-http (also in dry runs unless
	// persistOnly) and waits until the API server enforces it.
	refuse := func(persistOnly bool) {
		t.Helper()
		expr := "!(object.metadata.name.startsWith('leanmesh-atomic') && object.metadata.name.endsWith('-http'))"
		if persistOnly {
			expr = "request.dryRun == true || " + expr
		}
		vap := &admissionv1.ValidatingAdmissionPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "refuse-atomic-http"},
			Spec: admissionv1.ValidatingAdmissionPolicySpec{
				FailurePolicy: ptrTo(admissionv1.Fail),
				MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionv1.RuleWithOperations{
						Operations: []admissionv1.OperationType{admissionv1.Create, admissionv1.Update},
						Rule:       admissionv1.Rule{APIGroups: []string{"networking.istio.io"}, APIVersions: []string{"*"}, Resources: []string{"envoyfilters"}},
					},
				}}},
				Validations: []admissionv1.Validation{{Expression: expr, Message: "platform policy: this EnvoyFilter is not allowed"}},
			},
		}
		var existing admissionv1.ValidatingAdmissionPolicy
		if err := h.c.Get(h.ctx, client.ObjectKey{Name: vap.Name}, &existing); err == nil {
			existing.Spec = vap.Spec
			if err := h.c.Update(h.ctx, &existing); err != nil {
				t.Fatal(err)
			}
		} else if err := h.c.Create(h.ctx, vap); err != nil {
			t.Fatal(err)
		}
		binding := &admissionv1.ValidatingAdmissionPolicyBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "refuse-atomic-http"},
			Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: vap.Name,
				ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny}},
		}
		if err := h.c.Create(h.ctx, binding); err != nil && !strings.Contains(err.Error(), "already exists") {
			t.Fatal(err)
		}
		// Enforced once a probe object is refused the same way.
		probe := &networkingv1alpha3.EnvoyFilter{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "leanmesh-atomic-probe-http"}}
		h.eventually("admission policy enforced", func() error {
			err := h.c.Create(h.ctx, probe.DeepCopy(), client.DryRunAll)
			if persistOnly {
				if err != nil {
					return fmt.Errorf("dry run refused: %v", err)
				}
				err = h.c.Create(h.ctx, probe.DeepCopy())
				if err == nil {
					_ = h.c.Delete(h.ctx, probe.DeepCopy())
				}
			}
			if err == nil || !strings.Contains(err.Error(), "platform policy") {
				return fmt.Errorf("probe not refused: %v", err)
			}
			return nil
		})
	}
	update := func(name string, mut func(*v1alpha1.TelemetryPolicySpec)) {
		t.Helper()
		var p v1alpha1.TelemetryPolicy
		if err := h.c.Get(h.ctx, client.ObjectKey{Namespace: "shop", Name: name}, &p); err != nil {
			t.Fatal(err)
		}
		patch := client.MergeFrom(p.DeepCopy())
		mut(&p.Spec)
		if err := h.c.Patch(h.ctx, &p, patch); err != nil {
			t.Fatal(err)
		}
	}
	applyFailed := func(name string, want ...string) string {
		t.Helper()
		p := h.ready("shop", name, metav1.ConditionFalse, v1alpha1.ReasonApplyFailed)
		msg := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady).Message
		for _, w := range want {
			if !strings.Contains(msg, w) {
				t.Errorf("Ready message %q lacks %q", msg, w)
			}
		}
		return msg
	}

	t.Run("refused in the dry run: nothing written", func(t *testing.T) {
		refuse(false)
		update("atomic", func(s *v1alpha1.TelemetryPolicySpec) { s.Exposition.Path = "/gen2" })
		msg := applyFailed("atomic", "EnvoyFilter shop/leanmesh-atomic-http", "dry run", "platform policy", "nothing applied")
		if got := spec("leanmesh-atomic-exposition"); got != gen1Exposition {
			t.Errorf("exposition changed although the policy's http object was refused:\n%s\nwas\n%s", got, gen1Exposition)
		}
		if spec("leanmesh-atomic-http") != gen1HTTP {
			t.Error("http object changed")
		}
		h.waitOwned("shop", "atomic", objects...)
		t.Logf("Ready=False ApplyFailed: %s", msg)
	})

	t.Run("refused when persisting: rolled back", func(t *testing.T) {
		refuse(true)
		update("atomic", func(s *v1alpha1.TelemetryPolicySpec) { s.Exposition.Path = "/gen3" })
		msg := applyFailed("atomic", "EnvoyFilter shop/leanmesh-atomic-http", "platform policy", "rolled back the 1 object(s)")
		// The reconciler retries with backoff; each attempt applies and
		// rolls back, so sample the exposition between attempts.
		changed, samples := 0, 0
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); samples++ {
			if spec("leanmesh-atomic-exposition") != gen1Exposition {
				changed++
			}
			time.Sleep(20 * time.Millisecond)
		}
		if changed > samples/10 {
			t.Errorf("exposition seen at the refused generation in %d of %d samples", changed, samples)
		}
		if spec("leanmesh-atomic-http") != gen1HTTP {
			t.Error("http object changed")
		}
		t.Logf("Ready=False ApplyFailed: %s; exposition at the refused generation in %d of %d samples over 3s (between apply and rollback)", msg, changed, samples)
	})

	t.Run("new policy refused when persisting: no object left", func(t *testing.T) {
		h.pod("shop", "atomic2-1", map[string]string{"app": "atomic2"}, true)
		h.policy("shop", "atomic2", v1alpha1.TelemetryPolicySpec{Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "atomic2"}}})
		msg := applyFailed("atomic2", "EnvoyFilter shop/leanmesh-atomic2-http", "rolled back the 1 object(s)")
		h.waitOwned("shop", "atomic2")
		t.Logf("Ready=False ApplyFailed: %s; objects left: %v", msg, h.owned("shop", "atomic2"))
	})

	t.Run("admission lifted: the latest generation applies", func(t *testing.T) {
		for _, o := range []client.Object{
			&admissionv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: "refuse-atomic-http"}},
			&admissionv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: "refuse-atomic-http"}},
		} {
			if err := h.c.Delete(h.ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		probe := &networkingv1alpha3.EnvoyFilter{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "leanmesh-atomic-probe-http"}}
		h.eventually("admission policy lifted", func() error {
			if err := h.c.Create(h.ctx, probe.DeepCopy()); err != nil {
				return err
			}
			return h.c.Delete(h.ctx, probe.DeepCopy())
		})
		start := time.Now()
		// Touch the policies so the test does not wait out the 30 s retry.
		for _, n := range []string{"atomic", "atomic2"} {
			update(n, func(s *v1alpha1.TelemetryPolicySpec) { s.Exposition.Port = 15097 })
			h.ready("shop", n, metav1.ConditionTrue, v1alpha1.ReasonApplied)
		}
		h.waitOwned("shop", "atomic2", "EnvoyFilter shop/leanmesh-atomic2-exposition", "EnvoyFilter shop/leanmesh-atomic2-http")
		if got := spec("leanmesh-atomic-exposition"); !strings.Contains(got, "/gen3") {
			t.Errorf("exposition not at the latest generation: %s", got)
		}
		t.Logf("both policies Applied %s after the admission policy was removed", time.Since(start).Round(time.Millisecond))
	})
}

func ptrTo[T any](v T) *T { return &v }

// TestBadConfigRefusedByController: each bad config of issue #18, created
// on the real API server and reconciled by the real controller, is refused
// before anything is applied: either by the CRD's schema at admission or
// with Ready=False InvalidConfig naming the field, and no object exists.
func TestBadConfigRefusedByController(t *testing.T) {
	env := cluster.StartT(t, withCRDs)
	// As the binary wires it: the chart's library.path (--library-path).
	h := runController(t, env, func(r *Reconciler) { r.LibraryPaths = []string{render.DefaultLibraryPath} })
	for _, ns := range []string{rootNS, "other"} {
		if err := env.CreateNamespace(h.ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
	}
	h.pod("other", "victim-1", map[string]string{"app": "victim"}, true)
	sel := v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "victim"}}
	big := map[string]string{}
	for i := range 6000 {
		big[fmt.Sprintf("dim_%04d", i)] = fmt.Sprintf("request.headers['x-custom-header-%04d-%s']", i, strings.Repeat("v", 40))
	}
	for i, tc := range []struct {
		name string
		spec v1alpha1.TelemetryPolicySpec
		want string
	}{
		{"exposition on Envoy's inbound port", v1alpha1.TelemetryPolicySpec{Selector: sel, Exposition: v1alpha1.Exposition{Port: 15006}}, "spec.exposition.port"},
		{"library path nobody installs", v1alpha1.TelemetryPolicySpec{Selector: sel, LibraryPath: "/nonexistent/leanmesh.so"}, "spec.libraryPath"},
		{"proxyVersion that is not RE2", v1alpha1.TelemetryPolicySpec{Selector: sel, ProxyVersion: "(("}, "spec.proxyVersion"},
		{"dimension named le", v1alpha1.TelemetryPolicySpec{Selector: sel, Metrics: []v1alpha1.MetricOverride{{Dimensions: map[string]string{"le": "request.host"}}}}, `"le" is reserved`},
		{"selector with an invalid key", v1alpha1.TelemetryPolicySpec{Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app name": "victim"}}}, "spec.selector.matchLabels"},
		{"rendering too large for etcd (6,000 dimensions)", v1alpha1.TelemetryPolicySpec{Selector: sel,
			Contexts: []v1alpha1.TrafficContext{v1alpha1.ContextInbound, v1alpha1.ContextOutbound, v1alpha1.ContextGateway},
			Metrics:  []v1alpha1.MetricOverride{{Dimensions: big}}}, "etcd"},
	} {
		name := fmt.Sprintf("bad-%d", i)
		p := &v1alpha1.TelemetryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: name}, Spec: tc.spec}
		if err := h.c.Create(h.ctx, p); err != nil {
			t.Logf("%-48s refused by the API server (CRD schema): %v", tc.name, err)
			continue
		}
		got := h.ready("other", name, metav1.ConditionFalse, v1alpha1.ReasonInvalidConfig)
		msg := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionReady).Message
		if !strings.Contains(msg, tc.want) {
			t.Errorf("%s: message %q lacks %q", tc.name, msg, tc.want)
		}
		time.Sleep(300 * time.Millisecond) // time to do something wrong
		if objs := h.owned("other", name); len(objs) != 0 {
			t.Errorf("%s: applied %v", tc.name, objs)
		}
		t.Logf("%-48s Ready=False InvalidConfig, 0 objects: %s", tc.name, truncate(msg, 160))
		h.deletePolicy("other", name)
	}
}
