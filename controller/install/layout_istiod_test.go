package install

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/release"
	"github.com/leanmesh/leanmesh/controller/render"
	"github.com/leanmesh/leanmesh/e2e/cluster"
	"github.com/leanmesh/leanmesh/e2e/layout"
)

// TestIstiodFilterLayoutPerMode hands the rendered objects to a real istiod
// and checks, per mode, every HTTP and TCP filter chain a sidecar (inbound
// and outbound) and a gateway receive, plus the outbound clusters' TCP
// exchange: LeanMesh takes HTTP over from Istio (leanmesh first, no Istio
// HTTP stats or exchange) and leaves every TCP chain with Istio's stats and
// exchange; Shadow adds leanmesh beside Istio; Istio mode has no leanmesh.
func TestIstiodFilterLayoutPerMode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	env := cluster.StartT(t, cluster.Options{})
	istiod, err := env.StartIstiod(ctx, cluster.IstiodOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rel := release.Embedded().Default()
	if err := env.CreateNamespace(ctx, "shop", nil); err != nil {
		t.Fatal(err)
	}
	lib := map[string]string{v1alpha1.LabelEnvoyVersion: rel.Envoy}
	with := func(a map[string]string) map[string]string {
		out := map[string]string{}
		for _, m := range []map[string]string{a, lib} {
			for k, v := range m {
				out[k] = v
			}
		}
		return out
	}
	reviews, err := env.CreateWorkload(ctx, cluster.Workload{
		Namespace: "shop", Name: "reviews", IP: "10.244.0.21", Labels: with(map[string]string{"app": "reviews"}),
		Ports: []cluster.Port{{Name: "http", Port: 8080}, {Name: "tcp-cache", Port: 9000}},
	})
	if err != nil {
		t.Fatal(err)
	}
	db, err := env.CreateWorkload(ctx, cluster.Workload{
		Namespace: "shop", Name: "db", IP: "10.244.0.22", Ports: []cluster.Port{{Name: "tcp-postgres", Port: 5432}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ingress, err := env.CreateWorkload(ctx, cluster.Workload{
		Namespace: "shop", Name: "ingress", IP: "10.244.0.23", Labels: with(map[string]string{"istio": "ingressgateway"}),
		Ports: []cluster.Port{{Name: "http", Port: 8080}, {Name: "tcp", Port: 9000}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []map[string]any{
		{"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": map[string]any{"name": "ingress", "namespace": "shop"},
			"spec": map[string]any{"selector": map[string]any{"istio": "ingressgateway"}, "servers": []any{
				map[string]any{"port": map[string]any{"number": 8080, "name": "http", "protocol": "HTTP"}, "hosts": []any{"*"}},
				map[string]any{"port": map[string]any{"number": 9000, "name": "tcp", "protocol": "TCP"}, "hosts": []any{"*"}},
			}}},
		{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": map[string]any{"name": "ingress", "namespace": "shop"},
			"spec": map[string]any{"hosts": []any{"*"}, "gateways": []any{"ingress"},
				"http": []any{map[string]any{"route": []any{map[string]any{"destination": map[string]any{"host": reviews.Workload.Host(), "port": map[string]any{"number": 8080}}}}}},
				"tcp":  []any{map[string]any{"match": []any{map[string]any{"port": 9000}}, "route": []any{map[string]any{"destination": map[string]any{"host": db.Workload.Host(), "port": map[string]any{"number": 5432}}}}}},
			}},
	} {
		if err := env.Client.Create(ctx, &unstructured.Unstructured{Object: o}); err != nil {
			t.Fatal(err)
		}
	}
	sc, err := cluster.ConnectSidecar(ctx, istiod.XDSAddr, cluster.SidecarFor(reviews))
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

	apply := func(mode v1alpha1.Mode) {
		t.Helper()
		// Istio mode renders nothing: what an earlier mode rendered goes.
		if err := env.Client.DeleteAllOf(ctx, &networkingv1alpha3.EnvoyFilter{}, client.InNamespace("shop")); err != nil {
			t.Fatal(err)
		}
		for _, p := range []*v1alpha1.TelemetryPolicy{
			{Spec: v1alpha1.TelemetryPolicySpec{Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "reviews"}}}},
			{Spec: v1alpha1.TelemetryPolicySpec{Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"istio": "ingressgateway"}},
				Contexts: []v1alpha1.TrafficContext{v1alpha1.ContextGateway}}},
		} {
			p.Namespace, p.Name, p.Spec.Mode = "shop", p.Spec.Selector.MatchLabels["app"]+p.Spec.Selector.MatchLabels["istio"], mode
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
	}
	sidecarWant := layout.Want{
		Contexts:         []layout.Context{layout.Inbound, layout.Outbound},
		InboundTCPChains: []string{"0.0.0.0_9000"},
		TCPClusters:      []string{db.Workload.OutboundCluster(5432), reviews.Workload.OutboundCluster(9000)},
	}
	gatewayWant := layout.Want{Contexts: []layout.Context{layout.Gateway}}

	for _, mode := range []v1alpha1.Mode{v1alpha1.ModeIstio, v1alpha1.ModeLeanMesh, v1alpha1.ModeShadow, v1alpha1.ModeIstio} {
		t.Run(string(mode), func(t *testing.T) {
			apply(mode)
			for _, proxy := range []struct {
				name    string
				ads     *cluster.Sidecar
				gateway bool
				want    layout.Want
				extra   func(cluster.Snapshot) error
			}{
				{"sidecar", sc, false, sidecarWant, func(s cluster.Snapshot) error { return positions(s, mode) }},
				{"gateway", gw, true, gatewayWant, nil},
			} {
				var rep layout.Report
				var last error
				_, err := proxy.ads.WaitFor(ctx, func(s cluster.Snapshot) bool {
					rep, last = layout.Check(s, proxy.gateway, mode, proxy.want)
					if last == nil && proxy.extra != nil {
						last = proxy.extra(s)
					}
					if last == nil && mode != v1alpha1.ModeIstio && !s.Has(cluster.TypeListener, render.ExpositionListener) {
						last = fmt.Errorf("no %s listener", render.ExpositionListener)
					}
					return last == nil
				})
				if err != nil {
					t.Fatalf("%s: %v\nlast: %v", proxy.name, err, last)
				}
				t.Logf("%s %s: %s", mode, proxy.name, rep.Summary())
				for _, c := range rep.Chains {
					t.Logf("  %s", c)
				}
			}
		})
	}
}

// positions checks where leanmesh sits relative to Istio's filters on the
// sidecar's port-8080 chains: first in LeanMesh mode; in Shadow, first
// inbound (before Istio's exchange strips the request headers) and just
// before the router outbound (on the encode path it then runs before Istio's
// exchange strips the response headers).
func positions(s cluster.Snapshot, mode v1alpha1.Mode) error {
	var in, out []string
	for _, ch := range s.HTTPFilterChains("virtualInbound") {
		if ch.ChainName == "0.0.0.0_8080" {
			in = ch.HTTPFilters
		}
	}
	for _, ch := range s.HTTPFilterChains("0.0.0.0_8080") {
		out = ch.HTTPFilters
	}
	if len(in) == 0 || len(out) == 0 {
		return fmt.Errorf("no port-8080 HTTP chains yet (inbound %v outbound %v)", in, out)
	}
	switch mode {
	case v1alpha1.ModeShadow:
		i := slices.Index(out, render.PluginHTTP)
		if in[0] != render.PluginHTTP || len(in) < 2 || in[1] != layout.IstioMX {
			return fmt.Errorf("shadow inbound %s", strings.Join(in, " "))
		}
		if out[0] != layout.IstioMX || i < 0 || i+1 >= len(out) || out[i+1] != "envoy.filters.http.router" {
			return fmt.Errorf("shadow outbound %s", strings.Join(out, " "))
		}
	case v1alpha1.ModeLeanMesh:
		if in[0] != render.PluginHTTP || out[0] != render.PluginHTTP {
			return fmt.Errorf("leanmesh inbound %v outbound %v", in, out)
		}
	}
	return nil
}
