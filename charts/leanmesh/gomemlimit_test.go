package leanmesh

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// TestGoMemLimit: the Deployment sets GOMEMLIMIT to goMemLimitPercent of
// resources.limits.memory (helm template, the real renderer), leaves it
// out when there is nothing to derive it from, and refuses a limit it
// cannot convert. Each value is then handed to a real Go process, which
// must take it as its memory limit (the runtime parses GOMEMLIMIT at start
// and ignores nothing silently: a bad value aborts the process).
func TestGoMemLimit(t *testing.T) {
	// A bare number in a values file reaches the template as a float64.
	bare := filepath.Join(t.TempDir(), "bare.yaml")
	if err := os.WriteFile(bare, []byte("resources: {limits: {memory: 300000000}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		want string // "" = no GOMEMLIMIT
		err  string
	}{
		{"chart default (256Mi, 90%)", nil, "241591910", ""},
		{"1Gi", []string{"--set-string", "resources.limits.memory=1Gi"}, "966367641", ""},
		{"500M at 80%", []string{"--set-string", "resources.limits.memory=500M", "--set", "goMemLimitPercent=80"}, "400000000", ""},
		{"bytes as a number (--set)", []string{"--set", "resources.limits.memory=300000000"}, "270000000", ""},
		{"bytes as a number (values file)", []string{"-f", bare}, "270000000", ""},
		{"no memory limit", []string{"--set", "resources.limits=null"}, "", ""},
		{"percent 0", []string{"--set", "goMemLimitPercent=0"}, "", ""},
		{"decimal quantity", []string{"--set-string", "resources.limits.memory=0.5Gi"}, "", `resources.limits.memory "0.5Gi": GOMEMLIMIT is derived from it`},
		{"over 100%", []string{"--set", "goMemLimitPercent=150"}, "", "goMemLimitPercent"},
	} {
		t.Run(c.name, func(t *testing.T) {
			objs, err := helmTemplate(t, "default.yaml", nil, c.args...)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("want an error containing %q, got %v", c.err, err)
				}
				for _, l := range strings.Split(err.Error(), "\n") {
					if strings.Contains(l, c.err) {
						t.Logf("refused: %s", strings.TrimSpace(l))
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			dep := find(objs, "Deployment", releaseName+"-controller")
			if dep == nil {
				t.Fatal("no Deployment")
			}
			got, found := "", false
			containers, _, _ := unstructuredSlice(dep.Object, "spec", "template", "spec", "containers")
			for _, ctr := range containers {
				env, _ := ctr.(map[string]any)["env"].([]any)
				for _, e := range env {
					if m := e.(map[string]any); m["name"] == "GOMEMLIMIT" {
						got, found = fmt.Sprint(m["value"]), true
					}
				}
			}
			if got != c.want || found != (c.want != "") {
				t.Fatalf("GOMEMLIMIT = %q (set: %v), want %q", got, found, c.want)
			}
			if c.want == "" {
				t.Logf("no GOMEMLIMIT")
				return
			}
			// The Go runtime reads it: a child process reports its limit.
			cmd := exec.Command(os.Args[0], "-test.run=^TestGoMemLimitChild$")
			cmd.Env = append(os.Environ(), "GOMEMLIMIT="+got, "LEANMESH_GOMEMLIMIT_CHILD=1")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("a Go process with GOMEMLIMIT=%s: %v\n%s", got, err, out)
			}
			if !strings.Contains(string(out), "memory limit "+got+"\n") {
				t.Fatalf("a Go process with GOMEMLIMIT=%s reports:\n%s", got, out)
			}
			t.Logf("GOMEMLIMIT=%s; a Go process started with it has debug.SetMemoryLimit(-1) = %s", got, got)
		})
	}
}

// TestGoMemLimitChild prints the memory limit the runtime took from
// GOMEMLIMIT (run by TestGoMemLimit as a child process).
func TestGoMemLimitChild(t *testing.T) {
	if os.Getenv("LEANMESH_GOMEMLIMIT_CHILD") != "1" {
		t.Skip("child process of TestGoMemLimit")
	}
	fmt.Printf("memory limit %d\n", debug.SetMemoryLimit(-1))
}
