// Package config holds the generated CRDs and RBAC; its test shows that
// `make verify` (the first step of `make test`) fails when any of them, or
// the deepcopy code, is stale.
package config

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestVerifyCatchesStaleGeneratedFiles copies the working tree, checks that
// `make verify` passes on it, then touches an API type and an RBAC marker
// without regenerating and checks that `make verify` fails naming every file
// that went stale.
func TestVerifyCatchesStaleGeneratedFiles(t *testing.T) {
	out, err := exec.Command("git", "-C", "..", "ls-files", "-co", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	dir := t.TempDir()
	for _, f := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		src := filepath.Join("..", f)
		st, err := os.Stat(src)
		if err != nil || !st.Mode().IsRegular() {
			continue // deleted in the working tree
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, st.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	verify := func() (string, error) {
		cmd := exec.Command("make", "-s", "verify")
		cmd.Dir = dir
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	if out, err := verify(); err != nil {
		t.Fatalf("make verify on a copy of the working tree: %v\n%s", err, out)
	}

	for _, c := range []struct {
		name, file string
		edit       func(string) string
		stale      []string
	}{
		{"a field added to an API type", "controller/api/v1alpha1/telemetrypolicy_types.go",
			func(s string) string {
				return regexp.MustCompile(`(?m)^type TelemetryPolicySpec struct \{\n`).ReplaceAllString(s,
					"type TelemetryPolicySpec struct {\n\t// +optional\n\tTouched []string `json:\"touched,omitempty\"`\n")
			},
			[]string{"controller/api/v1alpha1/zz_generated.deepcopy.go", "config/crd/bases/leanmesh.io_telemetrypolicies.yaml",
				"charts/leanmesh/crds/leanmesh.io_telemetrypolicies.yaml"}},
		{"a verb added to an RBAC marker", "controller/workloadtable/rbac.go",
			func(s string) string {
				return strings.Replace(s, "resources=workloadentries,verbs=list;watch", "resources=workloadentries,verbs=list;watch;delete", 1)
			},
			[]string{"config/rbac/workload-table/role.yaml", "charts/leanmesh/files/rbac/workload-table.yaml", "config/rbac/role.yaml"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, c.file)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			edited := c.edit(string(b))
			if edited == string(b) {
				t.Fatalf("the edit did not apply to %s", c.file)
			}
			if err := os.WriteFile(p, []byte(edited), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := verify()
			if err == nil {
				t.Fatalf("make verify passed with stale generated files:\n%s", out)
			}
			for _, f := range c.stale {
				if !strings.Contains(out, f) {
					t.Errorf("make verify output does not name %s:\n%s", f, out)
				}
			}
			// verify regenerated them, so the next case starts from a clean tree.
		})
	}
}
