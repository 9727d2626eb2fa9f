package v1alpha1_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	"github.com/leanmesh/leanmesh/filters/pluginconfig"
	"github.com/leanmesh/leanmesh/filters/telemetry"
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
	num := func(v float64) *float64 { return &v }
	count := func(v int64) *int64 { return &v }
	cases := []struct {
		path     string
		min, max *float64 // nil: no bound
		maxItems *int64
	}{
		{path: "metadataExchange.peerCacheSize", min: num(1), max: num(pluginconfig.MaxPeerCacheSize)},
		{path: "nativeHistograms.schema", min: num(telemetry.MinNativeSchema), max: num(telemetry.MaxNativeSchema)},
		{path: "histogramBuckets", maxItems: count(pluginconfig.MaxHistogramBuckets)},
		{path: "maxSeries", min: num(0)}, // 0: no limit
	}
	str := func(v any) string {
		switch p := v.(type) {
		case *float64:
			if p != nil {
				return fmt.Sprint(*p)
			}
		case *int64:
			if p != nil {
				return fmt.Sprint(*p)
			}
		}
		return "none"
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			p := prop(c.path)
			if str(p.Minimum) != str(c.min) || str(p.Maximum) != str(c.max) || str(p.MaxItems) != str(c.maxItems) {
				t.Fatalf("CRD bounds min %s max %s maxItems %s; parser min %s max %s maxItems %s",
					str(p.Minimum), str(p.Maximum), str(p.MaxItems), str(c.min), str(c.max), str(c.maxItems))
			}
		})
	}
	if d := prop("nativeHistograms.schema").Default; d == nil || string(d.Raw) != fmt.Sprint(pluginconfig.DefaultNativeSchema) {
		t.Errorf("the CRD's default native schema is %v; the parser's is %d", d, pluginconfig.DefaultNativeSchema)
	}
	if !strings.Contains(prop("metadataExchange.peerCacheSize").Description, "default 500") || pluginconfig.DefaultPeerCacheSize != 500 {
		t.Errorf("the CRD documents the default peer cache size as 500; the parser's is %d", pluginconfig.DefaultPeerCacheSize)
	}
}
