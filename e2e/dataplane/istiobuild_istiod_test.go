package dataplane

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/release"
	"github.com/leanmesh/leanmesh/controller/render"
	"github.com/leanmesh/leanmesh/e2e/cluster"
	"github.com/leanmesh/leanmesh/e2e/layout"
)

// TestIstioBuildReporterOnIstiod: who reports istio_build in LeanMesh mode,
// on the listeners a real istiod serves. Istio's stats filter sets the gauge
// whenever Envoy builds an istio.stats config, HTTP or network
// (istio_stats.cc, Config::Config → recordVersion), so a proxy reports it
// exactly when some chain still has istio.stats; leanmesh serves no copy
// (TestBuildGaugeOnlyUnderPrefix). With a workload that has only an HTTP
// port — the least TCP a sidecar can have — the sidecar keeps istio.stats on
// its TCP chains (the outbound catch-all and the inbound passthrough chains
// always exist), so Istio still reports its istio_build once. A gateway whose
// only server is HTTP keeps none: that gateway has no istio_build in
// LeanMesh mode (the gap docs/telemetry.md names).
func TestIstioBuildReporterOnIstiod(t *testing.T) {
	// envtest logs through controller-runtime; without a logger it prints a
	// stack-traced warning (as in e2e/cluster's tests).
	ctrllog.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	env := cluster.StartT(t, cluster.Options{})
	istiod, err := env.StartIstiod(ctx, cluster.IstiodOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rel := release.Embedded().Default()
	if err := env.CreateNamespace(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	web, err := env.CreateWorkload(ctx, cluster.Workload{
		Namespace: "web", Name: "web", IP: "10.244.0.31",
		Labels: map[string]string{"app": "web", v1alpha1.LabelEnvoyVersion: rel.Envoy},
		Ports:  []cluster.Port{{Name: "http", Port: 8080}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ingress, err := env.CreateWorkload(ctx, cluster.Workload{
		Namespace: "web", Name: "ingress", IP: "10.244.0.32",
		Labels: map[string]string{"istio": "ingressgateway", v1alpha1.LabelEnvoyVersion: rel.Envoy},
		Ports:  []cluster.Port{{Name: "http", Port: 8080}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []map[string]any{
		{"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": map[string]any{"name": "ingress", "namespace": "web"},
			"spec": map[string]any{"selector": map[string]any{"istio": "ingressgateway"}, "servers": []any{
				map[string]any{"port": map[string]any{"number": 8080, "name": "http", "protocol": "HTTP"}, "hosts": []any{"*"}},
			}}},
		{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": map[string]any{"name": "ingress", "namespace": "web"},
			"spec": map[string]any{"hosts": []any{"*"}, "gateways": []any{"ingress"},
				"http": []any{map[string]any{"route": []any{map[string]any{"destination": map[string]any{"host": web.Workload.Host(), "port": map[string]any{"number": 8080}}}}}},
			}},
	} {
		if err := env.Client.Create(ctx, &unstructured.Unstructured{Object: o}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []*v1alpha1.TelemetryPolicy{
		{Spec: v1alpha1.TelemetryPolicySpec{Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "web"}}}},
		{Spec: v1alpha1.TelemetryPolicySpec{Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"istio": "ingressgateway"}},
			Contexts: []v1alpha1.TrafficContext{v1alpha1.ContextGateway}}},
	} {
		p.Namespace, p.Name, p.Spec.Mode = "web", p.Spec.Selector.MatchLabels["app"]+p.Spec.Selector.MatchLabels["istio"], v1alpha1.ModeLeanMesh
		out, err := render.Render(render.Input{Policy: p, RootNamespace: "istio-system", Matrix: release.Embedded()})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range out.Objects {
			u, err := render.Unstructured(o)
			if err != nil {
				t.Fatal(err)
			}
			if err := env.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(v1alpha1.FieldOwner), client.ForceOwnership); err != nil {
				t.Fatal(err)
			}
		}
	}
	sc, err := cluster.ConnectSidecar(ctx, istiod.XDSAddr, cluster.SidecarFor(web))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	gwOpts := cluster.SidecarFor(ingress)
	gwOpts.Router = true
	gw, err := cluster.ConnectSidecar(ctx, istiod.XDSAddr, gwOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()

	for _, proxy := range []struct {
		name       string
		ads        *cluster.Sidecar
		gateway    bool
		want       layout.Want
		istioStats bool // some chain keeps istio.stats: Istio reports istio_build
	}{
		{"sidecar with only an HTTP port", sc, false, layout.Want{Contexts: []layout.Context{layout.Inbound, layout.Outbound}}, true},
		{"gateway with only an HTTP server", gw, true, layout.Want{}, false},
	} {
		var rep layout.Report
		var last error
		_, err := proxy.ads.WaitFor(ctx, func(s cluster.Snapshot) bool {
			rep, last = layout.Check(s, proxy.gateway, v1alpha1.ModeLeanMesh, proxy.want)
			if last == nil && rep.HTTP[layout.Gateway]+rep.HTTP[layout.Outbound] == 0 {
				last = fmt.Errorf("no HTTP chain yet")
			}
			return last == nil
		})
		if err != nil {
			t.Fatalf("%s: %v\nlast: %v", proxy.name, err, last)
		}
		var stats []string
		for _, c := range rep.Chains {
			for _, f := range append(append([]string{}, c.NetworkFilters...), c.HTTPFilters...) {
				if f == layout.IstioStats {
					stats = append(stats, c.String())
				}
			}
		}
		if got := len(stats) > 0; got != proxy.istioStats {
			t.Errorf("%s: istio.stats kept on %d chains, want any: %v\n%s", proxy.name, len(stats), proxy.istioStats, rep.Summary())
		}
		t.Logf("%s, LeanMesh mode: %s; istio.stats (hence Istio's istio_build) on %d chains", proxy.name, rep.Summary(), len(stats))
		for _, s := range stats {
			t.Logf("  %s", s)
		}
	}
}
