package main

import (
	"fmt"
	"io"
	"os"

	"sigs.k8s.io/yaml"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/release"
	"github.com/leanmesh/leanmesh/controller/render"
	"github.com/leanmesh/leanmesh/controller/validation"
)

// renderFile renders one TelemetryPolicy offline (a dry run): the
// controller's validation chain (checks needing cluster state see none),
// then the same pure render. Invalid policies exit 1 with the check's name,
// reason and message, as the controller's Ready condition would say.
func renderFile(path, root string, stdout, stderr io.Writer) int {
	raw, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(stderr, "leanmesh render:", err)
		return 1
	}
	var p v1alpha1.TelemetryPolicy
	if err := yaml.UnmarshalStrict(raw, &p); err != nil {
		fmt.Fprintf(stderr, "leanmesh render: %s: %v\n", path, err)
		return 1
	}
	if p.Kind != "TelemetryPolicy" {
		fmt.Fprintf(stderr, "leanmesh render: %s: kind %q, want TelemetryPolicy\n", path, p.Kind)
		return 1
	}
	if p.Namespace == "" {
		p.Namespace = "default"
	}
	m := release.Embedded()
	in := validation.Input{Policy: &p, Spec: render.Defaults(p.Spec), RootNamespace: root, Matrix: m}
	if failed := validation.Default().Evaluate(&in); failed != nil {
		fmt.Fprintf(stderr, "leanmesh render: %s/%s not valid: check %s: Ready=False reason=%s: %s\n", p.Namespace, p.Name, failed.Check, failed.Reason, failed.Message)
		return 1
	}
	out, err := render.Render(render.Input{Policy: &p, RootNamespace: root, Matrix: m})
	if err != nil {
		fmt.Fprintf(stderr, "leanmesh render: %s/%s not valid: check Render: Ready=False reason=%s: %v\n", p.Namespace, p.Name, v1alpha1.ReasonInvalidConfig, err)
		return 1
	}
	b, err := render.YAML(out.Objects)
	if err != nil {
		fmt.Fprintln(stderr, "leanmesh render:", err)
		return 1
	}
	_, _ = stdout.Write(b)
	return 0
}
