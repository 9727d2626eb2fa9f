package install

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leanmesh/leanmesh/filters/pluginconfig"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/proxystatus"
	"github.com/leanmesh/leanmesh/controller/render"
	"github.com/leanmesh/leanmesh/e2e/cluster"
)

// TestNACKSurfacesOnIstiod: a sidecar (an ADS client on the real istiod)
// rejects every listener update that carries leanmesh's filter, as Envoy
// does when the library cannot be loaded. istiod records the NACK in the
// connection's watched-resource state; the controller reads it from
// istiod's /debug/syncz and must put it on the policy (ConfigAccepted=False,
// a Warning event, leanmesh_controller_proxies_rejecting) within 10 s.
func TestNACKSurfacesOnIstiod(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env, istiod := cluster.StartIstiodT(t, ctx, withCRDs, "shop")
	reg := prometheus.NewRegistry()
	metrics := NewMetrics(reg)
	h := runController(t, env, func(r *Reconciler) {
		r.Metrics = metrics
		// The production default interval (--proxy-status-interval).
		r.Proxies = &proxystatus.Poller{URLs: []string{"http://" + istiod.MonitoringAddr}}
	})
	wl := libraryWorkload(t, ctx, env, cluster.Workload{Namespace: "shop", Name: "reviews", IP: "10.244.2.10"})

	// Envoy's LDS rejection reads "Error adding/updating listener(s)
	// <names>: <reason>" (LdsApiImpl::onConfigUpdate); the reason here names
	// the filter and its library, as a failed dlopen would.
	var rejecting atomic.Bool
	rejecting.Store(true)
	var mu sync.Mutex
	var firstNACK time.Time
	opts := cluster.SidecarFor(wl)
	opts.Review = func(ts cluster.TypeSnapshot) string {
		if ts.TypeURL != cluster.TypeListener || !rejecting.Load() {
			return ""
		}
		for _, name := range ts.Names() {
			l, _ := ts.Resources[name].Msg.(*listenerv3.Listener)
			for _, ch := range cluster.HTTPFilterChains(l) {
				if count(ch.HTTPFilters, pluginconfig.PluginHTTP) > 0 {
					mu.Lock()
					if firstNACK.IsZero() {
						firstNACK = time.Now()
					}
					mu.Unlock()
					return fmt.Sprintf("Error adding/updating listener(s) %s: golang filter %s: failed to load library %s", name, pluginconfig.PluginHTTP, render.DefaultLibraryPath)
				}
			}
		}
		return ""
	}
	sc := istiod.ConnectT(t, ctx, opts)
	if _, err := sc.WaitFor(ctx, func(s cluster.Snapshot) bool { return s.Has(cluster.TypeListener, "virtualInbound") }); err != nil {
		t.Fatal(err)
	}

	condition := func() *metav1.Condition {
		var p v1alpha1.TelemetryPolicy
		if err := h.c.Get(ctx, keyOf("shop", "reviews"), &p); err != nil {
			t.Fatal(err)
		}
		return meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionConfigAccepted)
	}

	h.policy("shop", "reviews", v1alpha1.TelemetryPolicySpec{Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "reviews"}}})
	h.ready("shop", "reviews", metav1.ConditionTrue, v1alpha1.ReasonApplied)

	var surfaced time.Time
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c := condition(); c != nil && c.Status == metav1.ConditionFalse && c.Reason == v1alpha1.ReasonRejected {
			surfaced = time.Now()
			t.Logf("ConfigAccepted=False: %s", c.Message)
			if !strings.Contains(c.Message, "shop/reviews-0") || !strings.Contains(c.Message, "leanmesh.so") {
				t.Errorf("message names neither the pod nor istiod's error: %s", c.Message)
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	nacked := firstNACK
	mu.Unlock()
	if nacked.IsZero() {
		t.Fatal("the sidecar never received a listener with leanmesh to reject")
	}
	if surfaced.IsZero() {
		body := ""
		if resp, err := http.Get("http://" + istiod.MonitoringAddr + "/debug/syncz"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = resp.Status + " " + string(b)
		}
		t.Fatalf("NACK not surfaced within 30 s (condition %+v, %d NACKs sent); syncz: %s", condition(), sc.NACKs(), body)
	}
	took := surfaced.Sub(nacked)
	t.Logf("NACK surfaced on the policy %s after the proxy sent it (poll interval 2s)", took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Errorf("NACK surfaced after %s, want within 10 s", took)
	}
	if got := gauge(t, metrics.rejected.WithLabelValues("shop", "reviews")); got != 1 {
		t.Errorf("leanmesh_controller_proxies_rejecting = %v, want 1", got)
	}
	h.eventually("a Warning event Rejected on the policy", func() error {
		var evs eventsv1.EventList
		if err := h.c.List(ctx, &evs, client.InNamespace("shop")); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Regarding.Kind == "TelemetryPolicy" && e.Regarding.Name == "reviews" && e.Reason == v1alpha1.ReasonRejected && e.Type == "Warning" {
				return nil
			}
		}
		return fmt.Errorf("none among %d events", len(evs.Items))
	})

	t.Run("accepted again once the proxy ACKs", func(t *testing.T) {
		rejecting.Store(false)
		// A spec change re-renders the EnvoyFilters, so istiod pushes again.
		var p v1alpha1.TelemetryPolicy
		if err := h.c.Get(ctx, keyOf("shop", "reviews"), &p); err != nil {
			t.Fatal(err)
		}
		patch := client.MergeFrom(p.DeepCopy())
		p.Spec.Priority = ptr.To[int32](11)
		if err := h.c.Patch(ctx, &p, patch); err != nil {
			t.Fatal(err)
		}
		h.eventually("ConfigAccepted=True", func() error {
			if c := condition(); c == nil || c.Status != metav1.ConditionTrue {
				return fmt.Errorf("%+v", c)
			}
			return nil
		})
		if got := gauge(t, metrics.rejected.WithLabelValues("shop", "reviews")); got != 0 {
			t.Errorf("leanmesh_controller_proxies_rejecting = %v, want 0", got)
		}
	})
}

func gauge(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}
