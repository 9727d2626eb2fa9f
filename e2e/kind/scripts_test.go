// Package kind holds scripts for real clusters; they need Docker, so this
// test only checks them statically.
package kind

import (
	"os/exec"
	"path/filepath"
	"testing"
)

func TestScriptsParse(t *testing.T) {
	scripts, err := filepath.Glob("*.sh")
	if err != nil || len(scripts) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, s := range scripts {
		if out, err := exec.Command("bash", "-n", s).CombinedOutput(); err != nil {
			t.Errorf("bash -n %s: %v\n%s", s, err, out)
		}
	}
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Fatal("shellcheck is not installed (.ci/run installs it from Debian: apt-get install shellcheck)")
	}
	args := append([]string{"-x", "-P", "SCRIPTDIR"}, scripts...)
	cmd := exec.Command(sc, args...)
	cmd.Dir = "."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}
