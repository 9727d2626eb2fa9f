// Package kind holds scripts for real clusters; they need Docker, so this
// test only checks them statically.
package kind

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
		t.Fatal("shellcheck is not installed (make setup, i.e. e2e/cluster/build-binaries.sh, installs it from Debian)")
	}
	args := append([]string{"-x", "-P", "SCRIPTDIR"}, scripts...)
	cmd := exec.Command(sc, args...)
	cmd.Dir = "."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}

// TestUpUsesControllerImage: the kind scripts build the controller with the
// Dockerfile stage (make controller-image) and install the chart with the
// tag it produced, not an inline Dockerfile.
func TestUpUsesControllerImage(t *testing.T) {
	b, err := os.ReadFile("up.sh")
	if err != nil {
		t.Fatal(err)
	}
	up := string(b)
	for _, want := range []string{`make -C "$REPO" controller-image CONTROLLER_IMAGE="$CONTROLLER_IMAGE"`,
		`kind load docker-image "$CONTROLLER_IMAGE"`, `--set image.repository="${CONTROLLER_IMAGE%:*}" --set image.tag="${CONTROLLER_IMAGE##*:}"`} {
		if !strings.Contains(up, want) {
			t.Errorf("up.sh lacks %s", want)
		}
	}
	if strings.Contains(up, "DOCKERFILE") || strings.Contains(up, "docker build") {
		t.Error("up.sh builds an image inline; use the make targets")
	}
	out, err := exec.Command("bash", "-c", `source ./lib.sh && echo "$CONTROLLER_IMAGE"`).CombinedOutput()
	if err != nil {
		t.Fatalf("lib.sh: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); !strings.HasPrefix(got, "ghcr.io/leanmesh/leanmesh:") {
		t.Errorf("lib.sh CONTROLLER_IMAGE=%q, want make print-images' ghcr.io/leanmesh/leanmesh:<appVersion>", got)
	}
}
