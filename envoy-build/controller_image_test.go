package envoybuild

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestControllerDockerfile checks the controller stages statically (no
// engine here) and runs their go build on this machine: the binary it yields
// must be static, because the base has no libc.
func TestControllerDockerfile(t *testing.T) {
	global, stages := parseDockerfile(t, "Dockerfile")
	byName := map[string]*stage{}
	for _, s := range stages {
		byName[s.name] = s
	}
	b, img := byName["controller-build"], byName["controller"]
	if b == nil || img == nil {
		t.Fatal("Dockerfile has no controller-build/controller stages")
	}
	if b.from != "${GO_BUILDER_IMAGE}" {
		t.Errorf("controller-build FROM %s, want the matrix's ${GO_BUILDER_IMAGE}", b.from)
	}
	base := global["CONTROLLER_BASE_IMAGE"]
	if img.from != "${CONTROLLER_BASE_IMAGE}" || base != "scratch" && !strings.HasPrefix(base, "gcr.io/distroless/static") {
		t.Errorf("controller FROM %s (CONTROLLER_BASE_IMAGE=%q), want scratch or distroless/static", img.from, base)
	}
	// Non-root by number: kubelet's runAsNonRoot cannot verify a user name.
	uid, _, _ := strings.Cut(img.user, ":")
	if uid == "" || uid == "0" || strings.Trim(uid, "0123456789") != "" {
		t.Errorf("controller USER %q, want a numeric non-root uid", img.user)
	}
	if len(img.copies) != 1 || !slices.Contains(img.copies[0].flags, "--from=controller-build") ||
		!slices.Equal(img.copies[0].src, []string{"/out/leanmesh"}) || img.copies[0].dest[0] != "/leanmesh" {
		t.Errorf("controller COPY %+v, want only --from=controller-build /out/leanmesh /leanmesh", img.copies)
	}
	if got := img.labels["org.opencontainers.image.version"]; got != "${LEANMESH_VERSION}" {
		t.Errorf("controller version label %q, want ${LEANMESH_VERSION} (make passes the chart's appVersion)", got)
	}

	// Every COPY source of the build stage is in the context allowlist.
	checkCopiesAllowed(t, b)

	// make controller-image: the version and builder make passes.
	m, err := Load("versions.tsv")
	if err != nil {
		t.Fatal(err)
	}
	args := makeBuildArgs(t, "controller-image", m.Default().Istio)
	if want := chartAppVersion(t); args["LEANMESH_VERSION"] != want {
		t.Errorf("make controller-image passes LEANMESH_VERSION=%q, want the chart's appVersion %q", args["LEANMESH_VERSION"], want)
	}
	if args["GO_BUILDER_IMAGE"] != m.Default().GoBuilderImage {
		t.Errorf("make controller-image passes GO_BUILDER_IMAGE=%q, want the default row's %q", args["GO_BUILDER_IMAGE"], m.Default().GoBuilderImage)
	}

	// The stage's own go build, run here from the repository root.
	if len(b.runs) != 1 {
		t.Fatalf("controller-build has %d RUN, want 1", len(b.runs))
	}
	out := t.TempDir()
	script := strings.ReplaceAll(b.runs[0], "/out/", out+"/")
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "LEANMESH_VERSION=test-version")
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("controller-build RUN %q: %v\n%s", script, err, o)
	}
	bin := filepath.Join(out, "leanmesh")
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s has a %s program header: not static, cannot run on %s", bin, p.Type, base)
		}
	}
	if v, err := exec.Command(bin, "version").Output(); err != nil || strings.TrimSpace(string(v)) != "test-version" {
		t.Errorf("leanmesh version = %q, %v; want the LEANMESH_VERSION build arg", v, err)
	}
}

// TestControllerImageNeedsEngine: where there is no container engine (as
// here), make controller-image stops before building and says why.
func TestControllerImageNeedsEngine(t *testing.T) {
	for _, c := range []struct{ docker, want string }{
		{"/nonexistent/docker", "not found"},
		{"false", "no usable container engine"},
	} {
		out, err := exec.Command("make", "-s", "-C", "..", "controller-image", "DOCKER="+c.docker).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("make controller-image DOCKER=%s: err %v, output %q; want a failure saying %q", c.docker, err, out, c.want)
		}
	}
}

func chartAppVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../charts/leanmesh/Chart.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "appVersion:"); ok {
			return strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	t.Fatal("Chart.yaml has no appVersion")
	return ""
}
