package render

import (
	"errors"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/wellknown"

	"github.com/leanmesh/leanmesh/filters/pluginconfig"

	networkingapi "istio.io/api/networking/v1alpha3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/release"
)

// Every Envoy of the version matrix drains reads in its golang network
// filter, so a TCP policy is invalid for each of them; an unknown version
// counts as draining.
func TestTCPRefusedWhileGolangNetworkFilterDrains(t *testing.T) {
	m := release.Embedded()
	for _, rel := range m {
		if !GolangNetworkFilterDrainsReads(rel.Envoy) {
			t.Errorf("Envoy %s: golang.cc Filter::onData drains reads in every release checked; update the test with proof", rel.Envoy)
		}
		for _, protos := range [][]v1alpha1.Protocol{{v1alpha1.ProtocolTCP}, {v1alpha1.ProtocolHTTP, v1alpha1.ProtocolTCP}} {
			p := &v1alpha1.TelemetryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "shop"},
				Spec: v1alpha1.TelemetryPolicySpec{IstioRelease: rel.Istio, Protocols: protos}}
			out, err := Render(Input{Policy: p, RootNamespace: "istio-system", Matrix: m})
			var ie *Error
			if !errors.As(err, &ie) || out != nil {
				t.Fatalf("Istio %s %v: got %v, %v; want an invalid-policy error", rel.Istio, protos, out, err)
			}
			for _, want := range []string{"spec.protocols", "Envoy " + rel.Envoy, "golang.cc", "drains"} {
				if !strings.Contains(ie.Msg, want) {
					t.Errorf("message %q lacks %q", ie.Msg, want)
				}
			}
		}
	}
	for _, v := range []string{"", "1.40", "main", "v1.39.1"} {
		if !GolangNetworkFilterDrainsReads(v) {
			t.Errorf("%q must count as draining", v)
		}
	}
	// Mode Istio installs only the exposition, so TCP there is harmless.
	p := &v1alpha1.TelemetryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "shop"},
		Spec: v1alpha1.TelemetryPolicySpec{Mode: v1alpha1.ModeIstio, Protocols: []v1alpha1.Protocol{v1alpha1.ProtocolTCP}}}
	if out, err := Render(Input{Policy: p, RootNamespace: "istio-system", Matrix: m}); err != nil || len(out.Objects) != 1 || out.Objects[0].GetName() != "leanmesh-db-exposition" {
		t.Errorf("Istio mode with TCP: %v, %v", out, err)
	}
}

// The patch the renderer would emit once an Envoy stops draining stays
// exercised: the network golang filter with leanmesh-tcp before tcp_proxy.
func TestTCPPatchShape(t *testing.T) {
	rel := release.Embedded().Default()
	spec := Defaults(v1alpha1.TelemetryPolicySpec{Protocols: []v1alpha1.Protocol{v1alpha1.ProtocolTCP}})
	r := &renderer{spec: spec, rel: rel, selector: map[string]string{"app": "db"}, proxyVersion: rel.ProxyVersionRegex()}
	for _, c := range []v1alpha1.TrafficContext{v1alpha1.ContextInbound, v1alpha1.ContextOutbound} {
		p, err := r.tcpPatch(c)
		if err != nil {
			t.Fatal(err)
		}
		if p.ApplyTo != networkingapi.EnvoyFilter_NETWORK_FILTER || p.Patch.Operation != networkingapi.EnvoyFilter_Patch_INSERT_BEFORE ||
			p.Match.GetListener().GetFilterChain().GetFilter().GetName() != wellknown.TCPProxy {
			t.Errorf("%s: patch %v", c, p)
		}
		js, _ := p.Patch.Value.MarshalJSON()
		for _, want := range []string{netGolangType, `"plugin_name":"` + pluginconfig.PluginTCP + `"`, `"direction":"` + string(c) + `"`} {
			if !strings.Contains(string(js), want) {
				t.Errorf("%s: patch value lacks %s: %s", c, want, js)
			}
		}
	}
}
