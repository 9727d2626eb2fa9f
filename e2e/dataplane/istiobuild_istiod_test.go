package dataplane

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/wellknown"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/go-logr/logr"
	statsapi "istio.io/api/envoy/extensions/stats"
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
// always exist), so Istio still reports its istio_build, and the scrape
// listener carries nothing more. A gateway whose only server is HTTP keeps no
// istio.stats on any traffic chain, so its scrape listener carries Istio's
// istio.stats network filter with every standard metric dropped
// (render.istioBuildCarrier): Istio's own filter, hence Istio's own gauge, on
// a chain only scrapes pass. A gateway with a TCP server has both; Envoy
// keeps one gauge per name (AllocatorImpl::makeGauge), so still one series.
func TestIstioBuildReporterOnIstiod(t *testing.T) {
	// envtest logs through controller-runtime; without a logger it prints a
	// stack-traced warning (as in e2e/cluster's tests).
	ctrllog.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	env, istiod := cluster.StartIstiodT(t, ctx, cluster.Options{}, "web")
	lib := release.Embedded().Default().Envoy
	httpOnly := []cluster.Port{{Name: "http", Port: 8080}}
	web := env.WorkloadT(t, ctx, cluster.Workload{Namespace: "web", Name: "web", IP: "10.244.0.31",
		Labels: map[string]string{"app": "web", v1alpha1.LabelEnvoyVersion: lib}, Ports: httpOnly})
	ingress := env.WorkloadT(t, ctx, cluster.Workload{Namespace: "web", Name: "ingress", IP: "10.244.0.32",
		Labels: map[string]string{"istio": "ingressgateway", v1alpha1.LabelEnvoyVersion: lib}, Ports: httpOnly})
	db := env.WorkloadT(t, ctx, cluster.Workload{Namespace: "web", Name: "db", IP: "10.244.0.33",
		Ports: []cluster.Port{{Name: "tcp-postgres", Port: 5432}}})
	tcpIngress := env.WorkloadT(t, ctx, cluster.Workload{Namespace: "web", Name: "tcp-ingress", IP: "10.244.0.34",
		Labels: map[string]string{"istio": "tcpgateway", v1alpha1.LabelEnvoyVersion: lib},
		Ports:  []cluster.Port{{Name: "http", Port: 8080}, {Name: "tcp", Port: 9000}}})
	toWeb := cluster.Route{Port: 8080, Protocol: "HTTP", To: web, ToPort: 8080}
	if err := env.CreateGateway(ctx, "web", "tcp-ingress", "tcpgateway", toWeb, cluster.Route{Port: 9000, Protocol: "TCP", To: db, ToPort: 5432}); err != nil {
		t.Fatal(err)
	}
	if err := env.CreateGateway(ctx, "web", "ingress", "ingressgateway", toWeb); err != nil {
		t.Fatal(err)
	}
	mode := v1alpha1.ModeLeanMesh
	if err := layout.Apply(ctx, env.Client, layout.SidecarPolicy("web", "web", mode),
		layout.GatewayPolicy("web", "ingressgateway", mode), layout.GatewayPolicy("web", "tcpgateway", mode)); err != nil {
		t.Fatal(err)
	}
	sc := istiod.ConnectT(t, ctx, cluster.SidecarFor(web))
	gw := istiod.ConnectT(t, ctx, cluster.GatewayFor(ingress))
	tcpGw := istiod.ConnectT(t, ctx, cluster.GatewayFor(tcpIngress))

	for _, proxy := range []struct {
		name       string
		ads        *cluster.Sidecar
		gateway    bool
		want       layout.Want
		istioStats bool // some traffic chain keeps istio.stats
		carrier    bool // the scrape listener carries istio.stats for istio_build
	}{
		{"sidecar with only an HTTP port", sc, false, layout.Want{Contexts: []layout.Context{layout.Inbound, layout.Outbound}}, true, false},
		{"gateway with only an HTTP server", gw, true, layout.Want{}, false, true},
		{"gateway with an HTTP and a TCP server", tcpGw, true, layout.Want{Contexts: []layout.Context{layout.Gateway}}, true, true},
	} {
		var rep layout.Report
		var carrier bool
		var last error
		_, err := proxy.ads.WaitFor(ctx, func(s cluster.Snapshot) bool {
			rep, last = layout.Check(s, proxy.gateway, v1alpha1.ModeLeanMesh, proxy.want)
			if last == nil && rep.HTTP[layout.Gateway]+rep.HTTP[layout.Outbound] == 0 {
				last = fmt.Errorf("no HTTP chain yet")
			}
			if last == nil {
				carrier, last = istioBuildCarrier(s.Listener(render.ExpositionListener))
			}
			return last == nil
		})
		if err != nil {
			t.Fatalf("%s: %v\nlast: %v", proxy.name, err, last)
		}
		var stats []string
		for _, c := range rep.Chains {
			for _, f := range append(append([]string{}, c.NetworkFilters...), c.HTTPFilters...) {
				if f == render.IstioStatsFilter {
					stats = append(stats, c.String())
				}
			}
		}
		if got := len(stats) > 0; got != proxy.istioStats {
			t.Errorf("%s: istio.stats kept on %d traffic chains, want any: %v\n%s", proxy.name, len(stats), proxy.istioStats, rep.Summary())
		}
		if carrier != proxy.carrier {
			t.Errorf("%s: scrape listener carries istio.stats: %v, want %v", proxy.name, carrier, proxy.carrier)
		}
		if !carrier && len(stats) == 0 {
			t.Errorf("%s: no istio.stats anywhere: nothing reports istio_build", proxy.name)
		}
		t.Logf("%s, LeanMesh mode: %s; istio.stats on %d traffic chains, on the scrape listener: %v", proxy.name, rep.Summary(), len(stats), carrier)
		for _, s := range stats {
			t.Logf("  %s", s)
		}
	}
}

// istioStandardMetrics are the names of Istio's standard families as its
// stats filter knows them (istio_stats.cc, Context::all_metrics_).
var istioStandardMetrics = []string{
	"requests_total", "request_duration_milliseconds", "request_bytes", "response_bytes",
	"request_messages_total", "response_messages_total",
	"tcp_connections_opened_total", "tcp_connections_closed_total", "tcp_sent_bytes_total", "tcp_received_bytes_total",
}

// istioBuildCarrier reports whether the scrape listener l, as istiod serves
// it, runs Istio's istio.stats network filter before its connection manager.
// If it does, the filter must be a real stats.PluginConfig that records
// nothing but istio_build: every standard metric dropped, no report timer.
func istioBuildCarrier(l *listenerv3.Listener) (bool, error) {
	if l == nil {
		return false, fmt.Errorf("no %s listener", render.ExpositionListener)
	}
	if len(l.GetFilterChains()) != 1 {
		return false, fmt.Errorf("%s: %d filter chains, want 1", render.ExpositionListener, len(l.GetFilterChains()))
	}
	fs := l.GetFilterChains()[0].GetFilters()
	var names []string
	for _, f := range fs {
		names = append(names, f.GetName())
	}
	switch {
	case slices.Equal(names, []string{wellknown.HTTPConnectionManager}):
		return false, nil
	case !slices.Equal(names, []string{render.IstioStatsFilter, wellknown.HTTPConnectionManager}):
		return false, fmt.Errorf("%s filters %v", render.ExpositionListener, names)
	}
	cfg := &statsapi.PluginConfig{}
	if err := fs[0].GetTypedConfig().UnmarshalTo(cfg); err != nil {
		return false, fmt.Errorf("%s: istio.stats config %s: %v", render.ExpositionListener, fs[0].GetTypedConfig().GetTypeUrl(), err)
	}
	dropped := map[string]bool{}
	for _, m := range cfg.GetMetrics() {
		if m.GetDrop() {
			dropped[m.GetName()] = true
		}
	}
	for _, m := range istioStandardMetrics {
		if !dropped[m] {
			return false, fmt.Errorf("%s: istio.stats records %s: %v", render.ExpositionListener, m, cfg)
		}
	}
	if d := cfg.GetTcpReportingDuration(); d == nil || d.AsDuration() != 0 {
		return false, fmt.Errorf("%s: istio.stats tcp_reporting_duration %v, want 0 (no timer)", render.ExpositionListener, d)
	}
	return true, nil
}
