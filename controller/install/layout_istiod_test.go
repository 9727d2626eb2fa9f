package install

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/leanmesh/leanmesh/filters/pluginconfig"

	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
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
	env, istiod := cluster.StartIstiodT(t, ctx, cluster.Options{}, "shop")
	reviews := libraryWorkload(t, ctx, env, cluster.Workload{Namespace: "shop", Name: "reviews", IP: "10.244.0.21",
		Ports: []cluster.Port{{Name: "http", Port: 8080}, {Name: "tcp-cache", Port: 9000}}})
	db := env.WorkloadT(t, ctx, cluster.Workload{Namespace: "shop", Name: "db", IP: "10.244.0.22",
		Ports: []cluster.Port{{Name: "tcp-postgres", Port: 5432}}})
	ingress := libraryWorkload(t, ctx, env, cluster.Workload{Namespace: "shop", Name: "ingress", IP: "10.244.0.23",
		Labels: map[string]string{"istio": "ingressgateway"}, Ports: []cluster.Port{{Name: "http", Port: 8080}, {Name: "tcp", Port: 9000}}})
	if err := env.CreateGateway(ctx, "shop", "ingress", "ingressgateway",
		cluster.Route{Port: 8080, Protocol: "HTTP", To: reviews, ToPort: 8080},
		cluster.Route{Port: 9000, Protocol: "TCP", To: db, ToPort: 5432}); err != nil {
		t.Fatal(err)
	}
	sc := istiod.ConnectT(t, ctx, cluster.SidecarFor(reviews))
	gw := istiod.ConnectT(t, ctx, cluster.GatewayFor(ingress))

	apply := func(mode v1alpha1.Mode) {
		t.Helper()
		// Istio mode renders nothing: what an earlier mode rendered goes.
		if err := env.Client.DeleteAllOf(ctx, &networkingv1alpha3.EnvoyFilter{}, client.InNamespace("shop")); err != nil {
			t.Fatal(err)
		}
		if err := layout.Apply(ctx, env.Client, layout.SidecarPolicy("shop", "reviews", mode), layout.GatewayPolicy("shop", "ingressgateway", mode)); err != nil {
			t.Fatal(err)
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
		i := slices.Index(out, pluginconfig.PluginHTTP)
		if in[0] != pluginconfig.PluginHTTP || len(in) < 2 || in[1] != render.IstioMXFilter {
			return fmt.Errorf("shadow inbound %s", strings.Join(in, " "))
		}
		if out[0] != render.IstioMXFilter || i < 0 || i+1 >= len(out) || out[i+1] != "envoy.filters.http.router" {
			return fmt.Errorf("shadow outbound %s", strings.Join(out, " "))
		}
	case v1alpha1.ModeLeanMesh:
		if in[0] != pluginconfig.PluginHTTP || out[0] != pluginconfig.PluginHTTP {
			return fmt.Errorf("leanmesh inbound %v outbound %v", in, out)
		}
	}
	return nil
}
