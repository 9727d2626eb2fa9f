package render

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/release"
)

// TestBadConfigRefusedBeforeRender: each configuration issue #18 found
// Ready yet broken is an *Error (status InvalidConfig) naming the field.
func TestBadConfigRefusedBeforeRender(t *testing.T) {
	f := false
	cases := []struct {
		name string
		spec v1alpha1.TelemetryPolicySpec
		want string // substring of the message; "" = valid
	}{
		{"defaults", v1alpha1.TelemetryPolicySpec{}, ""},
		{"exposition on Envoy inbound", v1alpha1.TelemetryPolicySpec{Exposition: v1alpha1.Exposition{Port: 15006}}, "spec.exposition.port: 15006 is the sidecar's Envoy inbound port"},
		{"exposition on merged telemetry", v1alpha1.TelemetryPolicySpec{Exposition: v1alpha1.Exposition{Port: 15020}}, "spec.exposition.port: 15020"},
		{"reserved port with exposition disabled", v1alpha1.TelemetryPolicySpec{Exposition: v1alpha1.Exposition{Enabled: &f, Port: 15006}}, ""},
		{"library nobody installs", v1alpha1.TelemetryPolicySpec{LibraryPath: "/nonexistent/leanmesh.so"}, `spec.libraryPath: "/nonexistent/leanmesh.so" is not where the library is installed (/etc/leanmesh/leanmesh.so)`},
		{"library in the proxy image's dirs", v1alpha1.TelemetryPolicySpec{LibraryPath: "/usr/local/lib/leanmesh.so"}, "spec.libraryPath: no install path mounts the library in /usr/local/lib"},
		{"library path not clean", v1alpha1.TelemetryPolicySpec{LibraryPath: "/etc/leanmesh/../leanmesh/leanmesh.so"}, "must be a clean absolute path"},
		{"proxyVersion not RE2", v1alpha1.TelemetryPolicySpec{ProxyVersion: "(("}, `spec.proxyVersion: "((" is not a valid regular expression`},
		{"proxyVersion valid", v1alpha1.TelemetryPolicySpec{ProxyVersion: `^1\.31.*`}, ""},
		{"dimension le", v1alpha1.TelemetryPolicySpec{Metrics: []v1alpha1.MetricOverride{{Dimensions: map[string]string{"le": "request.host"}}}}, `"le" is reserved`},
		{"dimension __name__", v1alpha1.TelemetryPolicySpec{Metrics: []v1alpha1.MetricOverride{{Dimensions: map[string]string{"__name__": "request.host"}}}}, "not a valid Prometheus label name"},
		{"selector key invalid", v1alpha1.TelemetryPolicySpec{Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app name": "x"}}}, `spec.selector.matchLabels: key "app name" is not a valid label key`},
		{"selector value invalid", v1alpha1.TelemetryPolicySpec{Selector: v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "a b"}}}, `spec.selector.matchLabels[app]: "a b" is not a valid label value`},
		{"Istio mode still validated", v1alpha1.TelemetryPolicySpec{Mode: v1alpha1.ModeIstio, ProxyVersion: "(("}, "spec.proxyVersion"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := &v1alpha1.TelemetryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "p"}, Spec: tc.spec}
			_, err := Render(Input{Policy: p, RootNamespace: "istio-system", Matrix: release.Embedded(), LibraryPaths: []string{DefaultLibraryPath}})
			if tc.want == "" {
				if err != nil {
					t.Fatalf("valid spec refused: %v", err)
				}
				return
			}
			var inv *Error
			if !errors.As(err, &inv) {
				t.Fatalf("err = %v, want *Error containing %q", err, tc.want)
			}
			if !strings.Contains(inv.Msg, tc.want) {
				t.Fatalf("message %q\nwant it to contain %q", inv.Msg, tc.want)
			}
			t.Logf("refused: %s", inv.Msg)
		})
	}
}

// LargePolicy is a policy that fits in etcd itself (a few hundred KiB)
// but renders an EnvoyFilter etcd refuses: dimensions are repeated per
// traffic context.
func LargePolicy(namespace, name string, dims int) *v1alpha1.TelemetryPolicy {
	d := map[string]string{}
	for i := range dims {
		d[fmt.Sprintf("dim_%04d", i)] = fmt.Sprintf("request.headers['x-custom-header-%04d-%s']", i, strings.Repeat("v", 40))
	}
	return &v1alpha1.TelemetryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: v1alpha1.TelemetryPolicySpec{
			Contexts: []v1alpha1.TrafficContext{v1alpha1.ContextInbound, v1alpha1.ContextOutbound, v1alpha1.ContextGateway},
			Metrics:  []v1alpha1.MetricOverride{{Dimensions: d}},
		}}
}

func TestOversizedRenderingRefused(t *testing.T) {
	p := LargePolicy("shop", "big", 6000)
	_, err := Render(Input{Policy: p, RootNamespace: "istio-system", Matrix: release.Embedded()})
	var inv *Error
	if !errors.As(err, &inv) || !strings.Contains(inv.Msg, "over the 1024 KiB an object may take in etcd") {
		t.Fatalf("err = %v", err)
	}
	t.Logf("6,000 dimensions: %s", inv.Msg)
}
