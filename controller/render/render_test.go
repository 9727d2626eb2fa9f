package render

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/release"
)

var update = flag.Bool("update", false, "rewrite testdata/*.out.yaml from the renderer")

// goldenInput is the shape of testdata/*.in.yaml.
type goldenInput struct {
	RootNamespace string                   `json:"rootNamespace"`
	Policy        v1alpha1.TelemetryPolicy `json:"policy"`
}

// TestGolden renders every testdata/<case>.in.yaml and compares with
// <case>.out.yaml; an invalid policy renders as "error: <message>".
// Regenerate with: go test ./controller/render -update
func TestGolden(t *testing.T) {
	ins, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(ins) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range ins {
		name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			var gi goldenInput
			if err := yaml.UnmarshalStrict(raw, &gi); err != nil {
				t.Fatalf("%s: %v", in, err)
			}
			got := renderGolden(t, gi)
			outPath := strings.TrimSuffix(in, ".in.yaml") + ".out.yaml"
			if *update {
				if err := os.WriteFile(outPath, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(outPath)
			if err != nil {
				t.Fatalf("%v (run go test ./controller/render -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the renderer's output (go test ./controller/render -update to accept):\n%s", outPath, diff(string(want), string(got)))
			}
		})
	}
}

func renderGolden(t *testing.T, gi goldenInput) []byte {
	out, err := Render(Input{Policy: &gi.Policy, RootNamespace: gi.RootNamespace, Matrix: release.Embedded()})
	if err != nil {
		var ie *Error
		if !errors.As(err, &ie) {
			t.Fatalf("non-validation error: %v", err)
		}
		return []byte("error: " + err.Error() + "\n")
	}
	if len(out.Objects) == 0 {
		return []byte("# nothing rendered\n")
	}
	b, err := YAML(out.Objects)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// diff shows the first differing line with context; enough to see a golden
// change without a diff dependency.
func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return "line " + strconv.Itoa(i+1) + ":\n- " + wl + "\n+ " + gl
		}
	}
	return "(whitespace only)"
}
