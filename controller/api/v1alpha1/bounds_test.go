package v1alpha1_test

import (
	"os"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	"github.com/leanmesh/leanmesh/filters/pluginconfig"
)

// TestCRDBoundsMatchParser: the bounds the apiserver enforces (kubebuilder
// markers, as generated into the CRD) are the bounds the filter's parser
// enforces, so a value the API accepts never makes the filter reject its
// config (and Envoy the listener).
func TestCRDBoundsMatchParser(t *testing.T) {
	raw, err := os.ReadFile("../../../config/crd/bases/leanmesh.io_telemetrypolicies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		t.Fatal(err)
	}
	spec := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	prop := func(path string) apiextensionsv1.JSONSchemaProps {
		s := spec
		for _, p := range strings.Split(path, ".") {
			s = s.Properties[p]
		}
		return s
	}
	cases := []struct {
		path     string
		min, max float64
	}{
		{"metadataExchange.peerCacheSize", 1, pluginconfig.MaxPeerCacheSize},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			p := prop(c.path)
			if p.Minimum == nil || p.Maximum == nil || *p.Minimum != c.min || *p.Maximum != c.max {
				t.Fatalf("CRD bounds %v..%v, parser %v..%v", p.Minimum, p.Maximum, c.min, c.max)
			}
		})
	}
	if !strings.Contains(prop("metadataExchange.peerCacheSize").Description, "default 500") || pluginconfig.DefaultPeerCacheSize != 500 {
		t.Errorf("the CRD documents the default peer cache size as 500; the parser's is %d", pluginconfig.DefaultPeerCacheSize)
	}
}
