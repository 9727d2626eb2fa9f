package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/proxystatus"
	"github.com/leanmesh/leanmesh/controller/release"
	"github.com/leanmesh/leanmesh/e2e/cluster"
)

// withCRDs starts the control plane with leanmesh's CRDs and types (this
// package's tests on a real apiserver).
var withCRDs = cluster.Options{CRDPaths: []string{"../../../config/crd/bases"}, Scheme: v1alpha1.AddToScheme}

// TestAnalyzeOnIstiod runs `leanmesh analyze`'s code against a real
// apiserver and istiod: a mesh-wide LeanMesh policy, a workload opted out,
// two same-scope policies in conflict, a pod without the library and one
// whose proxy runs a newer Istio; the proxies are ADS clients on istiod.
func TestAnalyzeOnIstiod(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env, istiod := cluster.StartIstiodT(t, ctx, withCRDs, "shop")
	rel := release.Embedded().Default()
	for i, w := range []struct {
		app, lib, version string
	}{{"reviews", rel.Envoy, ""}, {"ratings", rel.Envoy, "1.32.0"}, {"details", "", ""}, {"legacy", rel.Envoy, ""}} {
		labels := map[string]string{"app": w.app, "security.istio.io/tlsMode": "istio"}
		if w.lib != "" {
			labels[v1alpha1.LabelEnvoyVersion] = w.lib
		}
		opts := cluster.SidecarFor(env.WorkloadT(t, ctx, cluster.Workload{Namespace: "shop", Name: w.app, IP: "10.244.7." + string(rune('1'+i)),
			Labels: labels, Ports: []cluster.Port{{Name: "http", Port: 8080}}}))
		opts.IstioVersion = w.version
		sc := istiod.ConnectT(t, ctx, opts)
		if _, err := sc.WaitFor(ctx, func(s cluster.Snapshot) bool { return s.Has(cluster.TypeListener, "virtualInbound") }); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []*v1alpha1.TelemetryPolicy{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "mesh"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "legacy"}, Spec: v1alpha1.TelemetryPolicySpec{Mode: v1alpha1.ModeIstio,
			Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "legacy"}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "ratings-a"}, Spec: v1alpha1.TelemetryPolicySpec{Mode: v1alpha1.ModeShadow,
			Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "ratings"}}}},
	} {
		if err := env.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1100 * time.Millisecond) // creation timestamps have second granularity: ratings-b is newer
	if err := env.Client.Create(ctx, &v1alpha1.TelemetryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "ratings-b"},
		Spec: v1alpha1.TelemetryPolicySpec{Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "ratings"}}}}); err != nil {
		t.Fatal(err)
	}

	px := &proxystatus.Poller{URLs: []string{"http://" + istiod.MonitoringAddr}}
	px.Poll(ctx)
	var probed []string
	a := analyzer{c: env.Client, root: "istio-system", ns: "shop", matrix: release.Embedded(), proxies: px,
		probe: func(_ context.Context, url string) string { probed = append(probed, url); return "200 OK (stub)" }}
	var out bytes.Buffer
	if err := a.run(ctx, &out); err != nil {
		t.Fatal(err)
	}
	t.Logf("leanmesh analyze -n shop:\n%s", out.String())
	rows := map[string]string{}
	for _, l := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], "shop/") {
			rows[strings.SplitN(strings.TrimPrefix(f[0], "shop/"), "-", 2)[0]] = l
		}
	}
	for app, want := range map[string][]string{
		"reviews": {"istio-system/mesh", "LeanMesh", "ok (" + rel.Envoy + ")", rel.Istio, "ACKED"},
		"ratings": {"shop/ratings-a", "Shadow", "1.32.0 SKEW", "ACKED"},
		"details": {"istio-system/mesh", "MISSING"},
		"legacy":  {"shop/legacy", "Istio", "not needed"},
	} {
		for _, w := range want {
			if !strings.Contains(rows[app], w) {
				t.Errorf("%s row lacks %q: %q", app, w, rows[app])
			}
		}
	}
	if !strings.Contains(out.String(), "policy shop/ratings-b: Conflict with older shop/ratings-a") {
		t.Error("the conflict is not reported")
	}
	if len(probed) != 4 || !strings.Contains(strings.Join(probed, " "), ":15095/stats/prometheus") {
		t.Errorf("scrape targets probed: %v", probed)
	}
}
