package install

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/leanmesh/leanmesh/filters/pluginconfig"

	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/render"
	"github.com/leanmesh/leanmesh/e2e/cluster"
	"github.com/leanmesh/leanmesh/e2e/layout"
)

// TestIstiodAppliesRenderedFilters hands the rendered objects to a real
// istiod and checks the HTTP filter chains a sidecar of a labelled pod
// receives: Istio accepts the patches, positions are as designed, and the
// Telemetry removes istio.stats.
func TestIstiodAppliesRenderedFilters(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env, istiod := cluster.StartIstiodT(t, ctx, cluster.Options{}, "shop")
	sc := istiod.ConnectT(t, ctx, cluster.SidecarFor(libraryWorkload(t, ctx, env, cluster.Workload{Namespace: "shop", Name: "reviews", IP: "10.244.0.21"})))

	apply := func(mode v1alpha1.Mode) {
		t.Helper()
		if err := layout.Apply(ctx, env.Client, layout.SidecarPolicy("shop", "reviews", mode)); err != nil {
			t.Fatal(err)
		}
	}
	inbound := func(s cluster.Snapshot) []string {
		for _, ch := range s.HTTPFilterChains("virtualInbound") {
			if ch.ChainName == "0.0.0.0_8080" {
				return ch.HTTPFilters
			}
		}
		return nil
	}
	outbound := func(s cluster.Snapshot) []string {
		for _, ch := range s.HTTPFilterChains("0.0.0.0_8080") {
			return ch.HTTPFilters
		}
		return nil
	}
	wait := func(what string, cond func(cluster.Snapshot) error) cluster.Snapshot {
		t.Helper()
		var last error
		s, err := sc.WaitFor(ctx, func(s cluster.Snapshot) bool { last = cond(s); return last == nil })
		if err != nil {
			t.Fatalf("%s: %v (last: %v)", what, err, last)
		}
		return s
	}

	t.Run("LeanMesh", func(t *testing.T) {
		apply(v1alpha1.ModeLeanMesh)
		s := wait("leanmesh first, Istio MX and stats gone", func(s cluster.Snapshot) error {
			in, out := inbound(s), outbound(s)
			if len(in) == 0 || in[0] != pluginconfig.PluginHTTP || slices.Contains(in, "istio.metadata_exchange") || slices.Contains(in, "istio.stats") {
				return fmt.Errorf("inbound %v", in)
			}
			if len(out) == 0 || out[0] != pluginconfig.PluginHTTP || slices.Contains(out, "istio.metadata_exchange") || slices.Contains(out, "istio.stats") {
				return fmt.Errorf("outbound %v", out)
			}
			if !s.Has(cluster.TypeListener, render.ExpositionListener) {
				return fmt.Errorf("no %s listener in %v", render.ExpositionListener, s.Names(cluster.TypeListener))
			}
			return nil
		})
		t.Logf("inbound %v\noutbound %v", inbound(s), outbound(s))
	})

	t.Run("Shadow", func(t *testing.T) {
		// Shadow renders no Telemetry: delete LeanMesh's.
		if err := env.Client.DeleteAllOf(ctx, &telemetryv1.Telemetry{}, client.InNamespace("shop")); err != nil {
			t.Fatal(err)
		}
		apply(v1alpha1.ModeShadow)
		s := wait("leanmesh observes beside Istio", func(s cluster.Snapshot) error {
			in, out := inbound(s), outbound(s)
			if len(in) < 2 || in[0] != pluginconfig.PluginHTTP || in[1] != "istio.metadata_exchange" || !slices.Contains(in, "istio.stats") {
				return fmt.Errorf("inbound %v", in)
			}
			i := slices.Index(out, pluginconfig.PluginHTTP)
			if len(out) == 0 || out[0] != "istio.metadata_exchange" || i < 0 || i+1 >= len(out) || out[i+1] != "envoy.filters.http.router" || !slices.Contains(out, "istio.stats") {
				return fmt.Errorf("outbound %v", out)
			}
			return nil
		})
		t.Logf("inbound %v\noutbound %v", strings.Join(inbound(s), " "), strings.Join(outbound(s), " "))
	})
}
