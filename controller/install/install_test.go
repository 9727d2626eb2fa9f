package install

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	telemetryapi "istio.io/api/telemetry/v1alpha1"
	typeapi "istio.io/api/type/v1beta1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/release"
	"github.com/leanmesh/leanmesh/controller/render"
	"github.com/leanmesh/leanmesh/e2e/cluster"
)

const (
	rootNS       = "istio-system"
	controllerNS = "leanmesh-system"
	controllerSA = "leanmesh-controller"
)

// withCRDs starts the control plane with leanmesh's CRDs and types.
var withCRDs = cluster.Options{CRDPaths: []string{"../../config/crd/bases"}, Scheme: v1alpha1.AddToScheme}

// libraryWorkload creates w with the default release's library label and,
// unless w has ports, one HTTP port (8080): a pod leanmesh can run in.
func libraryWorkload(t testing.TB, ctx context.Context, env *cluster.Env, w cluster.Workload) *cluster.WorkloadObjects {
	t.Helper()
	w.Labels = maps.Clone(w.Labels)
	if w.Labels == nil {
		w.Labels = map[string]string{"app": w.Name}
	}
	w.Labels[v1alpha1.LabelEnvoyVersion] = release.Embedded().Default().Envoy
	if len(w.Ports) == 0 {
		w.Ports = []cluster.Port{{Name: "http", Port: 8080}}
	}
	return env.WorkloadT(t, ctx, w)
}

// generatedRBAC is controller-gen's role.yaml: tests run the controller
// under it, so a missing RBAC marker fails them.
const generatedRBAC = "../../config/rbac/role.yaml"

// harness is a real etcd + kube-apiserver (e2e/cluster) with the
// TelemetryPolicy CRD and the reconciler running in a manager.
type harness struct {
	t   *testing.T
	env *cluster.Env
	c   client.Client
	ctx context.Context
	rel release.Release
	// stop ends the controller (the cluster keeps running).
	stop func()
}

func startHarness(t *testing.T) *harness {
	t.Helper()
	start := time.Now()
	env := cluster.StartT(t, withCRDs)
	t.Logf("control plane up in %s", time.Since(start).Round(time.Millisecond))
	h := runController(t, env)
	for _, ns := range []string{rootNS, "shop", "pay", "other", "a", "b"} {
		if err := env.CreateNamespace(h.ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// runController runs the reconciler in a manager on env, under the
// generated RBAC, until the test ends.
func runController(t *testing.T, env *cluster.Env, opts ...func(*Reconciler)) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	// The manager runs as a service account holding only the generated
	// RBAC (config/rbac), so a missing permission fails these tests.
	cfg := env.ServiceAccountConfigT(t, ctx, generatedRBAC, controllerNS, controllerSA)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  env.Scheme,
		Cache:                   CacheOptions(),
		Metrics:                 metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:  "0",
		LeaderElection:          true,
		LeaderElectionID:        "leanmesh-controller.leanmesh.io",
		LeaderElectionNamespace: controllerNS,
		// A test that restarts the controller gets the lease at once.
		LeaderElectionReleaseOnCancel: true,
		// Several tests in this process each run a manager with the same
		// controller name; the name check guards one binary's metrics only.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	m := release.Embedded()
	r := &Reconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Scheme: mgr.GetScheme(),
		Recorder: mgr.GetEventRecorder("leanmesh"), RootNamespace: rootNS, Matrix: m, Metrics: NewMetrics(nil),
	}
	for _, o := range opts {
		o(r)
	}
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("manager: %v", err)
			}
		})
	}
	// Registered after StartT's cleanup, so it runs first: stop the manager
	// before the apiserver goes away.
	t.Cleanup(stop)
	return &harness{t: t, env: env, c: env.Client, ctx: context.Background(), rel: m.Default(), stop: stop}
}

// pod creates an injected pod; withLib adds the library label.
func (h *harness) pod(ns, name string, labels map[string]string, withLib bool) {
	h.t.Helper()
	l := map[string]string{"security.istio.io/tlsMode": "istio"}
	for k, v := range labels {
		l[k] = v
	}
	if withLib {
		l[v1alpha1.LabelEnvoyVersion] = h.rel.Envoy
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
	if err := h.c.Create(h.ctx, p); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) policy(ns, name string, spec v1alpha1.TelemetryPolicySpec) *v1alpha1.TelemetryPolicy {
	h.t.Helper()
	p := &v1alpha1.TelemetryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
	if err := h.c.Create(h.ctx, p); err != nil {
		h.t.Fatal(err)
	}
	return p
}

// eventually polls cond until it returns nil or 30s pass.
func (h *harness) eventually(what string, cond func() error) {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.t.Fatalf("%s: %v", what, err)
}

// ready waits for the policy's Ready condition at its current generation.
func (h *harness) ready(ns, name string, status metav1.ConditionStatus, reason string) *v1alpha1.TelemetryPolicy {
	h.t.Helper()
	var p v1alpha1.TelemetryPolicy
	h.eventually(fmt.Sprintf("%s/%s Ready=%s/%s", ns, name, status, reason), func() error {
		if err := h.c.Get(h.ctx, client.ObjectKey{Namespace: ns, Name: name}, &p); err != nil {
			return err
		}
		c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady)
		if c == nil || c.ObservedGeneration != p.Generation || c.Status != status || c.Reason != reason {
			var all v1alpha1.TelemetryPolicyList
			_ = h.c.List(h.ctx, &all)
			var others []string
			for _, o := range all.Items {
				if r := meta.FindStatusCondition(o.Status.Conditions, v1alpha1.ConditionReady); r != nil && (o.Namespace != ns || o.Name != name) {
					others = append(others, fmt.Sprintf("%s/%s %s/%s: %s", o.Namespace, o.Name, r.Status, r.Reason, r.Message))
				}
			}
			return fmt.Errorf("conditions %+v at generation %d (other policies: %v)", p.Status.Conditions, p.Generation, others)
		}
		return nil
	})
	return &p
}

// owned lists "Kind ns/name" of objects labelled for the policy.
func (h *harness) owned(ns, name string) []string {
	h.t.Helper()
	sel := client.MatchingLabels{v1alpha1.LabelPolicy: name, v1alpha1.LabelPolicyNamespace: ns}
	var out []string
	var efs networkingv1alpha3.EnvoyFilterList
	if err := h.c.List(h.ctx, &efs, sel); err != nil {
		h.t.Fatal(err)
	}
	for _, o := range efs.Items {
		out = append(out, "EnvoyFilter "+o.Namespace+"/"+o.Name)
	}
	var tels telemetryv1.TelemetryList
	if err := h.c.List(h.ctx, &tels, sel); err != nil {
		h.t.Fatal(err)
	}
	for _, o := range tels.Items {
		out = append(out, "Telemetry "+o.Namespace+"/"+o.Name)
	}
	return out
}

func (h *harness) waitOwned(ns, name string, want ...string) {
	h.t.Helper()
	h.eventually(fmt.Sprintf("objects of %s/%s", ns, name), func() error {
		got := h.owned(ns, name)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			return fmt.Errorf("got %v, want %v", got, want)
		}
		return nil
	})
}

func (h *harness) setMode(ns, name string, mode v1alpha1.Mode) {
	h.t.Helper()
	var p v1alpha1.TelemetryPolicy
	if err := h.c.Get(h.ctx, client.ObjectKey{Namespace: ns, Name: name}, &p); err != nil {
		h.t.Fatal(err)
	}
	patch := client.MergeFrom(p.DeepCopy())
	p.Spec.Mode = mode
	if err := h.c.Patch(h.ctx, &p, patch); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) envoyFilter(ns, name string) *networkingv1alpha3.EnvoyFilter {
	h.t.Helper()
	ef := &networkingv1alpha3.EnvoyFilter{}
	if err := h.c.Get(h.ctx, client.ObjectKey{Namespace: ns, Name: name}, ef); err != nil {
		h.t.Fatal(err)
	}
	return ef
}

func (h *harness) deletePolicy(ns, name string) {
	h.t.Helper()
	p := &v1alpha1.TelemetryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := h.c.Delete(h.ctx, p); err != nil {
		h.t.Fatal(err)
	}
	h.eventually("policy "+ns+"/"+name+" gone", func() error {
		err := h.c.Get(h.ctx, client.ObjectKeyFromObject(p), p)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (finalizers %v): %v", p.Finalizers, err)
	})
}

// TestReconcilerOnRealAPIServer runs the reconciler against a real
// kube-apiserver + etcd and walks a policy through its life.
func TestReconcilerOnRealAPIServer(t *testing.T) {
	h := startHarness(t)
	h.pod("shop", "reviews-1", map[string]string{"app": "reviews"}, true)
	h.pod("shop", "reviews-2", map[string]string{"app": "reviews", "service.istio.io/canonical-name": "reviews"}, false)
	h.pod("shop", "plain", map[string]string{"app": "reviews-sidecarless"}, false)
	step := time.Now()
	phase := func(name string) {
		t.Logf("%-40s %s", name, time.Since(step).Round(time.Millisecond))
		step = time.Now()
	}

	t.Run("CRD defaults agree with render.Defaults", func(t *testing.T) {
		p := h.policy("other", "defaults", v1alpha1.TelemetryPolicySpec{Mode: v1alpha1.ModeIstio})
		if err := h.c.Get(h.ctx, client.ObjectKeyFromObject(p), p); err != nil {
			t.Fatal(err)
		}
		want := render.Defaults(v1alpha1.TelemetryPolicySpec{Mode: v1alpha1.ModeIstio})
		if !equality.Semantic.DeepEqual(p.Spec, want) {
			t.Fatalf("stored spec %+v\nrender.Defaults %+v", p.Spec, want)
		}
		h.ready("other", "defaults", metav1.ConditionTrue, v1alpha1.ReasonIstioTelemetry)
		h.deletePolicy("other", "defaults")
	})
	phase("defaults")

	t.Run("LeanMesh renders filters, no Telemetry, for labelled pods", func(t *testing.T) {
		// A Telemetry an earlier release rendered for this policy (it
		// disabled ALL_METRICS, TCP included) is deleted on upgrade.
		legacy := &telemetryv1.Telemetry{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "leanmesh-reviews", Labels: map[string]string{
			v1alpha1.LabelManagedBy: v1alpha1.ManagedBy, v1alpha1.LabelPolicy: "reviews", v1alpha1.LabelPolicyNamespace: "shop"}}}
		if err := h.c.Create(h.ctx, legacy); err != nil {
			t.Fatal(err)
		}
		h.policy("shop", "reviews", v1alpha1.TelemetryPolicySpec{Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "reviews"}}})
		p := h.ready("shop", "reviews", metav1.ConditionTrue, v1alpha1.ReasonApplied)
		h.waitOwned("shop", "reviews", "EnvoyFilter shop/leanmesh-reviews-exposition", "EnvoyFilter shop/leanmesh-reviews-http")
		ef := h.envoyFilter("shop", "leanmesh-reviews-http")
		wantSel := map[string]string{"app": "reviews", v1alpha1.LabelEnvoyVersion: h.rel.Envoy}
		if !equality.Semantic.DeepEqual(ef.Spec.WorkloadSelector.GetLabels(), wantSel) {
			t.Errorf("workloadSelector %v, want %v", ef.Spec.WorkloadSelector.GetLabels(), wantSel)
		}
		var ops []string
		for _, cp := range ef.Spec.ConfigPatches {
			ops = append(ops, cp.Match.Context.String()+":"+cp.Patch.Operation.String())
			if cp.Match.GetProxy().GetProxyVersion() != h.rel.ProxyVersionRegex() {
				t.Errorf("proxyVersion %q", cp.Match.GetProxy().GetProxyVersion())
			}
		}
		if got := strings.Join(ops, ","); got != "SIDECAR_INBOUND:REMOVE,SIDECAR_INBOUND:REMOVE,SIDECAR_INBOUND:INSERT_FIRST,SIDECAR_OUTBOUND:REMOVE,SIDECAR_OUTBOUND:REMOVE,SIDECAR_OUTBOUND:INSERT_FIRST" {
			t.Errorf("patches %s", got)
		}
		if ef.Spec.Priority != render.DefaultPriority || len(ef.OwnerReferences) != 1 || ef.OwnerReferences[0].Name != "reviews" {
			t.Errorf("priority %d owners %v", ef.Spec.Priority, ef.OwnerReferences)
		}
		// reviews-2 lacks the library: reported, not patched; "plain" has
		// no sidecar and is not reported.
		lib := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionLibraryPresent)
		if lib == nil || lib.Status != metav1.ConditionFalse || lib.Reason != v1alpha1.ReasonLibraryMissing {
			t.Errorf("LibraryPresent %+v", lib)
		}
		if want := []v1alpha1.WorkloadRef{{Namespace: "shop", Name: "reviews", Pods: 1}}; !equality.Semantic.DeepEqual(p.Status.WorkloadsMissingLibrary, want) {
			t.Errorf("workloadsMissingLibrary %+v", p.Status.WorkloadsMissingLibrary)
		}
		if p.Status.Mode != v1alpha1.ModeLeanMesh || len(p.Status.RenderedObjects) != 2 {
			t.Errorf("status mode %s rendered %v", p.Status.Mode, p.Status.RenderedObjects)
		}
		h.eventually("LibraryMissing event", func() error {
			var evs eventsv1.EventList
			if err := h.c.List(h.ctx, &evs, client.InNamespace("shop")); err != nil {
				return err
			}
			for _, e := range evs.Items {
				if e.Reason == v1alpha1.ReasonLibraryMissing && e.Regarding.Name == "reviews" {
					return nil
				}
			}
			return fmt.Errorf("no event among %d", len(evs.Items))
		})
	})
	phase("leanmesh")

	t.Run("drift is undone", func(t *testing.T) {
		if err := h.c.Delete(h.ctx, h.envoyFilter("shop", "leanmesh-reviews-http")); err != nil {
			t.Fatal(err)
		}
		h.eventually("EnvoyFilter recreated", func() error {
			return h.c.Get(h.ctx, client.ObjectKey{Namespace: "shop", Name: "leanmesh-reviews-http"}, &networkingv1alpha3.EnvoyFilter{})
		})
	})
	phase("drift")

	t.Run("Shadow renders observe filters and no Telemetry", func(t *testing.T) {
		h.setMode("shop", "reviews", v1alpha1.ModeShadow)
		h.ready("shop", "reviews", metav1.ConditionTrue, v1alpha1.ReasonApplied)
		h.waitOwned("shop", "reviews", "EnvoyFilter shop/leanmesh-reviews-exposition", "EnvoyFilter shop/leanmesh-reviews-http")
		ef := h.envoyFilter("shop", "leanmesh-reviews-http")
		var got []string
		for _, cp := range ef.Spec.ConfigPatches {
			got = append(got, cp.Match.Context.String()+":"+cp.Patch.Operation.String()+":"+cp.Match.GetListener().GetFilterChain().GetFilter().GetSubFilter().GetName())
			mx := cp.Patch.Value.GetFields()["typed_config"].GetStructValue().GetFields()["plugin_config"].GetStructValue().
				GetFields()["value"].GetStructValue().GetFields()["metadata_exchange"].GetStructValue().GetFields()["mode"].GetStringValue()
			if mx != "observe" {
				t.Errorf("metadata_exchange.mode %q", mx)
			}
		}
		if s := strings.Join(got, ","); s != "SIDECAR_INBOUND:INSERT_FIRST:,SIDECAR_OUTBOUND:INSERT_BEFORE:envoy.filters.http.router" {
			t.Errorf("patches %s", s)
		}
	})
	phase("shadow")

	t.Run("Istio mode removes everything but the exposition", func(t *testing.T) {
		h.setMode("shop", "reviews", v1alpha1.ModeIstio)
		p := h.ready("shop", "reviews", metav1.ConditionTrue, v1alpha1.ReasonIstioTelemetry)
		h.waitOwned("shop", "reviews", "EnvoyFilter shop/leanmesh-reviews-exposition")
		if len(p.Status.RenderedObjects) != 1 || p.Status.RenderedObjects[0].Name != "leanmesh-reviews-exposition" {
			t.Errorf("renderedObjects %v", p.Status.RenderedObjects)
		}
	})
	phase("istio")

	t.Run("overlapping policy is refused, then takes over", func(t *testing.T) {
		h.setMode("shop", "reviews", v1alpha1.ModeLeanMesh)
		h.ready("shop", "reviews", metav1.ConditionTrue, v1alpha1.ReasonApplied)
		time.Sleep(10 * time.Millisecond)
		h.policy("shop", "reviews-v2", v1alpha1.TelemetryPolicySpec{Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "reviews", "version": "v2"}}})
		p := h.ready("shop", "reviews-v2", metav1.ConditionFalse, v1alpha1.ReasonConflict)
		if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); !strings.Contains(c.Message, "shop/reviews") {
			t.Errorf("message %q does not name the other policy", c.Message)
		}
		h.waitOwned("shop", "reviews-v2")
		h.waitOwned("shop", "reviews", "EnvoyFilter shop/leanmesh-reviews-exposition", "EnvoyFilter shop/leanmesh-reviews-http")

		h.deletePolicy("shop", "reviews")
		h.waitOwned("shop", "reviews")
		h.ready("shop", "reviews-v2", metav1.ConditionTrue, v1alpha1.ReasonApplied)
		h.waitOwned("shop", "reviews-v2", "EnvoyFilter shop/leanmesh-reviews-v2-exposition", "EnvoyFilter shop/leanmesh-reviews-v2-http")
		h.deletePolicy("shop", "reviews-v2")
		h.waitOwned("shop", "reviews-v2")
	})
	phase("overlap + delete")

	t.Run("user Telemetry overriding metrics is a conflict", func(t *testing.T) {
		h.pod("pay", "pay-1", map[string]string{"app": "pay"}, true)
		user := &telemetryv1.Telemetry{
			ObjectMeta: metav1.ObjectMeta{Namespace: "pay", Name: "user-metrics"},
			Spec: telemetryapi.Telemetry{
				Selector: &typeapi.WorkloadSelector{MatchLabels: map[string]string{"app": "pay"}},
				Metrics: []*telemetryapi.Metrics{{Providers: []*telemetryapi.ProviderRef{{Name: "prometheus"}},
					Overrides: []*telemetryapi.MetricsOverrides{{TagOverrides: map[string]*telemetryapi.MetricsOverrides_TagOverride{"x": {Value: "'1'"}}}}}},
			},
		}
		if err := h.c.Create(h.ctx, user); err != nil {
			t.Fatal(err)
		}
		h.policy("pay", "pay", v1alpha1.TelemetryPolicySpec{Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "pay"}}})
		p := h.ready("pay", "pay", metav1.ConditionFalse, v1alpha1.ReasonTelemetryConflict)
		if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); !strings.Contains(c.Message, "pay/user-metrics") {
			t.Errorf("message %q", c.Message)
		}
		h.waitOwned("pay", "pay")
		if err := h.c.Delete(h.ctx, user); err != nil {
			t.Fatal(err)
		}
		h.ready("pay", "pay", metav1.ConditionTrue, v1alpha1.ReasonApplied)
		h.deletePolicy("pay", "pay")
	})
	phase("telemetry conflict")

	t.Run("invalid plugin config: condition, nothing applied", func(t *testing.T) {
		h.pod("other", "bad-1", map[string]string{"app": "bad"}, true)
		h.policy("other", "bad", v1alpha1.TelemetryPolicySpec{
			Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "bad"}},
			Metrics:  []v1alpha1.MetricOverride{{Name: "requests_total", Dimensions: map[string]string{"size": "size(request.headers)"}}},
		})
		p := h.ready("other", "bad", metav1.ConditionFalse, v1alpha1.ReasonInvalidConfig)
		if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); !strings.Contains(c.Message, "unsupported expression") {
			t.Errorf("message %q", c.Message)
		}
		// Give the controller time to do something wrong.
		time.Sleep(500 * time.Millisecond)
		if got := h.owned("other", "bad"); len(got) != 0 {
			t.Errorf("applied %v", got)
		}
		h.deletePolicy("other", "bad")
	})
	phase("invalid")

	t.Run("mesh-wide policy: filters in root only", func(t *testing.T) {
		h.pod("a", "mesh-a", map[string]string{"tier": "mesh"}, true)
		h.pod("b", "mesh-b", map[string]string{"tier": "mesh"}, true)
		h.policy(rootNS, "mesh", v1alpha1.TelemetryPolicySpec{Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"tier": "mesh"}}})
		h.ready(rootNS, "mesh", metav1.ConditionTrue, v1alpha1.ReasonApplied)
		// Root-namespace EnvoyFilters reach every namespace; no per-namespace copies.
		h.waitOwned(rootNS, "mesh", "EnvoyFilter istio-system/leanmesh-mesh-exposition", "EnvoyFilter istio-system/leanmesh-mesh-http")
		h.deletePolicy(rootNS, "mesh")
		h.waitOwned(rootNS, "mesh")
	})
	phase("mesh-wide")
}
