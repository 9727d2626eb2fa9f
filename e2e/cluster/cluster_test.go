package cluster

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/protobuf/types/known/structpb"
	apinetworkingv1 "istio.io/api/networking/v1"
	apinetworkingv1alpha3 "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

func init() {
	// envtest logs through controller-runtime; without a logger it prints a
	// stack-traced warning. Warnings and errors still reach stderr.
	ctrllog.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
}

const golangFilter = "envoy.filters.http.golang"

// TestSidecarConfigFromRealIstiod drives a real istiod through Kubernetes API
// objects and checks the xDS a sidecar receives: CDS for both services,
// Sidecar egress scoping, and an EnvoyFilter-inserted HTTP filter in LDS.
func TestSidecarConfigFromRealIstiod(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	phase := time.Now()
	step := func(what string) {
		t.Logf("%-32s %s", what, time.Since(phase).Round(time.Millisecond))
		phase = time.Now()
	}

	env := StartT(t, Options{})
	step("etcd+apiserver+CRDs")
	istiod, err := env.StartIstiod(ctx, IstiodOptions{})
	if err != nil {
		t.Fatal(err)
	}
	step("istiod ready")

	const ns = "shop"
	if err := env.CreateNamespace(ctx, ns, map[string]string{"istio-injection": "enabled"}); err != nil {
		t.Fatal(err)
	}
	front, err := env.CreateWorkload(ctx, Workload{
		Namespace: ns, Name: "frontend", IP: "10.244.0.11",
		Labels: map[string]string{"app": "frontend", "version": "v1"},
		Ports:  []Port{{Name: "http", Port: 8080}},
	})
	if err != nil {
		t.Fatal(err)
	}
	back, err := env.CreateWorkload(ctx, Workload{
		Namespace: ns, Name: "backend", IP: "10.244.0.12",
		Ports: []Port{{Name: "http-api", Port: 9090, TargetPort: 9091}},
	})
	if err != nil {
		t.Fatal(err)
	}
	step("workloads created")

	sc, err := ConnectSidecar(ctx, istiod.XDSAddr, SidecarFor(front))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	t.Logf("sidecar node %s metadata %s", SidecarFor(front).NodeID(), sc.NodeMetadataJSON())

	frontOut, backOut := front.Workload.OutboundCluster(8080), back.Workload.OutboundCluster(9090)
	var before Snapshot
	ok := t.Run("CDS has both services", func(t *testing.T) {
		before, err = sc.WaitFor(ctx, func(s Snapshot) bool {
			return s.Has(TypeCluster, frontOut) && s.Has(TypeCluster, backOut) &&
				s.Has(TypeCluster, "inbound|8080||") && s.Has(TypeListener, "virtualInbound")
		})
		if err != nil {
			t.Fatal(err)
		}
		step("first CDS/LDS with both")
		t.Logf("xDS: %s", before.Summary())
		// EDS follows CDS: the backend's endpoint must be the pod IP.
		if _, err := sc.WaitFor(ctx, func(s Snapshot) bool {
			r, ok := s.Types[TypeEndpoint].Resources[backOut]
			return ok && r.Contains("10.244.0.12")
		}); err != nil {
			t.Fatalf("EDS for %s with pod IP: %v", backOut, err)
		}
	})
	if !ok {
		t.FailNow()
	}

	ok = t.Run("Sidecar egress scopes CDS", func(t *testing.T) {
		pushes := sc.Snapshot().Pushes(TypeCluster)
		sidecar := &networkingv1.Sidecar{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "frontend-egress"},
			Spec: apinetworkingv1.Sidecar{
				WorkloadSelector: &apinetworkingv1.WorkloadSelector{Labels: map[string]string{"app": "frontend"}},
				Egress: []*apinetworkingv1.IstioEgressListener{{
					Hosts: []string{"./" + back.Workload.Host(), "istio-system/*"},
				}},
			},
		}
		if err := env.Client.Create(ctx, sidecar); err != nil {
			t.Fatal(err)
		}
		after, err := sc.WaitFor(ctx, func(s Snapshot) bool {
			return s.Pushes(TypeCluster) > pushes && !s.Has(TypeCluster, frontOut) && s.Has(TypeCluster, backOut)
		})
		if err != nil {
			t.Fatal(err)
		}
		step("CDS scoped by Sidecar")
		nb, na := len(before.Types[TypeCluster].Resources), len(after.Types[TypeCluster].Resources)
		t.Logf("CDS %d clusters/%d B -> %d clusters/%d B: %v", nb, before.Types[TypeCluster].Bytes, na, after.Types[TypeCluster].Bytes, after.Names(TypeCluster))
		if na >= nb {
			t.Errorf("CDS did not shrink: %d -> %d", nb, na)
		}
		if !after.Has(TypeCluster, "inbound|8080||") {
			t.Errorf("inbound cluster vanished: %v", after.Names(TypeCluster))
		}
	})
	if !ok {
		t.FailNow()
	}

	t.Run("EnvoyFilter inserts HTTP filter before router", func(t *testing.T) {
		patch, err := structpb.NewStruct(map[string]any{
			"name": golangFilter,
			"typed_config": map[string]any{
				"@type":        "type.googleapis.com/envoy.extensions.filters.http.golang.v3alpha.Config",
				"library_id":   "leanmesh",
				"library_path": "/usr/local/lib/leanmesh/filter.so",
				"plugin_name":  "leanmesh",
				"plugin_config": map[string]any{
					"@type":    "type.googleapis.com/xds.type.v3.TypedStruct",
					"type_url": "type.googleapis.com/leanmesh.e2e.Config",
					"value":    map[string]any{"marker": "leanmesh-e2e-marker"},
				},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		pushes := sc.Snapshot().Pushes(TypeListener)
		ef := &networkingv1alpha3.EnvoyFilter{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "frontend-golang"},
			Spec: apinetworkingv1alpha3.EnvoyFilter{
				WorkloadSelector: &apinetworkingv1alpha3.WorkloadSelector{Labels: map[string]string{"app": "frontend"}},
				ConfigPatches: []*apinetworkingv1alpha3.EnvoyFilter_EnvoyConfigObjectPatch{{
					ApplyTo: apinetworkingv1alpha3.EnvoyFilter_HTTP_FILTER,
					Match: &apinetworkingv1alpha3.EnvoyFilter_EnvoyConfigObjectMatch{
						Context: apinetworkingv1alpha3.EnvoyFilter_SIDECAR_INBOUND,
						ObjectTypes: &apinetworkingv1alpha3.EnvoyFilter_EnvoyConfigObjectMatch_Listener{
							Listener: &apinetworkingv1alpha3.EnvoyFilter_ListenerMatch{
								FilterChain: &apinetworkingv1alpha3.EnvoyFilter_ListenerMatch_FilterChainMatch{
									Filter: &apinetworkingv1alpha3.EnvoyFilter_ListenerMatch_FilterMatch{
										Name:      "envoy.filters.network.http_connection_manager",
										SubFilter: &apinetworkingv1alpha3.EnvoyFilter_ListenerMatch_SubFilterMatch{Name: "envoy.filters.http.router"},
									},
								},
							},
						},
					},
					Patch: &apinetworkingv1alpha3.EnvoyFilter_Patch{
						Operation: apinetworkingv1alpha3.EnvoyFilter_Patch_INSERT_BEFORE,
						Value:     patch,
					},
				}},
			},
		}
		if err := env.Client.Create(ctx, ef); err != nil {
			t.Fatal(err)
		}
		// The service port's own inbound chain (named after it by istiod)
		// must carry the filter, not just the catch-all chains.
		snap, err := sc.WaitFor(ctx, func(s Snapshot) bool {
			if s.Pushes(TypeListener) <= pushes {
				return false
			}
			for _, ch := range s.HTTPFilterChains("virtualInbound") {
				if ch.ChainName == "0.0.0.0_8080" && slices.Contains(ch.HTTPFilters, golangFilter) {
					return true
				}
			}
			return false
		})
		if err != nil {
			for _, ch := range snap.HTTPFilterChains("virtualInbound") {
				t.Logf("virtualInbound chain %q: %v", ch.ChainName, ch.HTTPFilters)
			}
			t.Fatal(err)
		}
		step("EnvoyFilter in LDS")
		for _, ch := range snap.HTTPFilterChains("virtualInbound") {
			t.Logf("virtualInbound chain %q: %v", ch.ChainName, ch.HTTPFilters)
			i := slices.Index(ch.HTTPFilters, golangFilter)
			if i < 0 || i+1 >= len(ch.HTTPFilters) || ch.HTTPFilters[i+1] != "envoy.filters.http.router" {
				t.Errorf("chain %q: %s is not right before the router: %v", ch.ChainName, golangFilter, ch.HTTPFilters)
				continue
			}
			if cfg := ch.Configs[i]; !strings.HasSuffix(cfg.TypeURL, "golang.v3alpha.Config") || !bytes.Contains(cfg.Value, []byte("leanmesh-e2e-marker")) {
				t.Errorf("chain %q: golang filter config lost: type %s, %d bytes", ch.ChainName, cfg.TypeURL, len(cfg.Value))
			}
		}
		// Outbound listeners must not get it: the patch was SIDECAR_INBOUND only.
		for _, name := range snap.Names(TypeListener) {
			if name == "virtualInbound" {
				continue
			}
			for _, ch := range snap.HTTPFilterChains(name) {
				if slices.Contains(ch.HTTPFilters, golangFilter) {
					t.Errorf("outbound listener %s chain %q got %s", name, ch.ChainName, golangFilter)
				}
			}
		}
	})

	if err := sc.Close(); err != nil {
		t.Logf("closing sidecar: %v", err)
	}
	if err := env.Stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	step("stop")
	if left := env.Processes(); len(left) > 0 {
		t.Errorf("processes left after Stop: %v", left)
	}
}

// TestSkipEnvVar checks the explicit skip switch is the only way to skip.
func TestSkipEnvVar(t *testing.T) {
	t.Setenv(SkipEnvVar, "1")
	ran := false
	t.Run("skipped", func(t *testing.T) {
		StartT(t, Options{})
		ran = true
	})
	if ran {
		t.Fatal("StartT did not skip with " + SkipEnvVar + "=1")
	}
}
