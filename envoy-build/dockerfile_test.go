package envoybuild

import (
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/parser"

	"github.com/leanmesh/leanmesh/envoy-build/podpatch"
)

// No Docker engine here: the Dockerfile is parsed with BuildKit's own parser
// and checked against the matrix and the install paths. Not exercised: that
// the base images exist, that the build stage succeeds inside the image, and
// the images' runtime behaviour.

type stage struct {
	name, from string
	args       map[string]string // ARG defaults declared in the stage
	labels     map[string]string // raw (unexpanded) values
	copies     []copyInstr
	runs       []string
	user       string
}

type copyInstr struct {
	flags     []string
	src, dest []string
}

func parseDockerfile(t *testing.T, path string) (global map[string]string, stages []*stage) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range res.Warnings {
		t.Errorf("parser warning: %s", w.Short)
	}
	global = map[string]string{}
	var cur *stage
	for _, n := range res.AST.Children {
		var vals []string
		for x := n.Next; x != nil; x = x.Next {
			vals = append(vals, x.Value)
		}
		switch strings.ToLower(n.Value) {
		case "arg":
			k, v, _ := strings.Cut(vals[0], "=")
			if cur == nil {
				global[k] = v
			} else {
				cur.args[k] = v
			}
		case "from":
			cur = &stage{from: vals[0], args: map[string]string{}, labels: map[string]string{}}
			if len(vals) == 3 && strings.EqualFold(vals[1], "AS") {
				cur.name = vals[2]
			}
			stages = append(stages, cur)
		case "label":
			for i := 0; i+1 < len(vals); i += 3 { // key, value, "="
				cur.labels[vals[i]] = strings.Trim(vals[i+1], `"`)
			}
		case "copy":
			cur.copies = append(cur.copies, copyInstr{flags: n.Flags, src: vals[:len(vals)-1], dest: vals[len(vals)-1:]})
		case "run":
			cur.runs = append(cur.runs, strings.Join(vals, " "))
		case "user":
			cur.user = vals[0]
		}
	}
	return global, stages
}

var argRef = regexp.MustCompile(`\$\{(\w+)\}`)

func expand(s string, args map[string]string) string {
	return argRef.ReplaceAllStringFunc(s, func(m string) string { return args[argRef.FindStringSubmatch(m)[1]] })
}

// builderGlibc is the glibc of the Debian releases golang images are built on.
var builderGlibc = map[string]string{"bullseye": "2.31", "bookworm": "2.36", "trixie": "2.41"}

func TestDockerfile(t *testing.T) {
	m, err := Load("versions.tsv")
	if err != nil {
		t.Fatal(err)
	}
	def := m.Default()
	global, stages := parseDockerfile(t, "Dockerfile")
	byName := map[string]*stage{}
	var names []string
	for _, s := range stages {
		byName[s.name] = s
		names = append(names, s.name)
	}
	if want := []string{"build", "proxyv2", "library", "library-init", "controller-build", "controller"}; !slices.Equal(names, want) {
		t.Fatalf("stages %v, want %v", names, want)
	}

	// FROM lines: the builder and proxy images come from the matrix via build args.
	for name, want := range map[string]string{"build": "${GO_BUILDER_IMAGE}", "proxyv2": "${PROXYV2_IMAGE}", "library": "scratch", "library-init": "${BUSYBOX_IMAGE}"} {
		if got := byName[name].from; got != want {
			t.Errorf("stage %s: FROM %s, want %s", name, got, want)
		}
	}
	// Defaults = the default row, so a bare `docker build` builds it.
	for k, want := range map[string]string{"GO_BUILDER_IMAGE": def.GoBuilderImage, "PROXYV2_IMAGE": def.ProxyImage} {
		if global[k] != want {
			t.Errorf("global ARG %s=%q, want the default row's %q", k, global[k], want)
		}
	}
	for _, s := range stages {
		for k, want := range map[string]string{"SDK_MODULE": def.SDK, "BUILD_TAG": def.BuildTag, "ISTIO_VERSION": def.Istio, "ENVOY_VERSION": def.Envoy} {
			if got, ok := s.args[k]; ok && got != want {
				t.Errorf("stage %s: ARG %s=%q, want the default row's %q", s.name, k, got, want)
			}
		}
	}

	// The build stage: row's modfile and tag, c-shared.
	b := byName["build"]
	run := strings.Join(b.runs, "\n")
	for _, want := range []string{`envoy-build/sdkmod.sh "${SDK_MODULE}" /tmp/sdk/go.row.mod`, "-modfile=/tmp/sdk/go.row.mod", `-tags "${BUILD_TAG}"`, "-buildmode=c-shared", "CGO_ENABLED=1", "-o /out/leanmesh.so ./filters/cmd/leanmesh"} {
		if !strings.Contains(run, want) {
			t.Errorf("build stage RUN lacks %q:\n%s", want, run)
		}
	}

	// COPY targets: the paths the EnvoyFilters and the pod patches use.
	// controller/render is read as text, so this package's tests do not
	// depend on the controller's API packages building.
	src, err := os.ReadFile("../controller/render/render.go")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`DefaultLibraryPath\s*=\s*"` + regexp.QuoteMeta(podpatch.DefaultLibraryPath) + `"`).Match(src) {
		t.Fatalf("controller/render's DefaultLibraryPath is not %s", podpatch.DefaultLibraryPath)
	}
	for name, dest := range map[string]string{"proxyv2": podpatch.DefaultLibraryPath, "library": podpatch.ImageLibraryFile, "library-init": podpatch.ImageLibraryFile} {
		s := byName[name]
		if len(s.copies) != 1 {
			t.Errorf("stage %s: %d COPY, want only the library", name, len(s.copies))
			continue
		}
		c := s.copies[0]
		if !slices.Contains(c.flags, "--from=build") || !slices.Equal(c.src, []string{"/out/leanmesh.so"}) || c.dest[0] != dest {
			t.Errorf("stage %s: COPY %v %v %v, want --from=build /out/leanmesh.so %s", name, c.flags, c.src, c.dest, dest)
		}
	}
	if u := byName["library-init"].user; u != "1337" {
		t.Errorf("library-init runs as %q, want the non-root 1337 the pod patch sets", u)
	}

	// Every COPY source of the build stage is in the context allowlist.
	checkCopiesAllowed(t, b)

	// Each row, as make passes it: the build args must exist in the
	// Dockerfile, cover every row-dependent ARG, and label the images with the
	// row's versions; the builder's glibc must match the matrix and not exceed
	// the proxy's.
	for _, r := range m {
		for _, target := range []string{"image", "library-image"} {
			args := makeBuildArgs(t, target, r.Istio)
			for k := range args {
				if _, ok := global[k]; !ok && !declaredInAnyStage(stages, k) {
					t.Errorf("make %s passes --build-arg %s, not declared in the Dockerfile", target, k)
				}
			}
			want := map[string]string{"GO_BUILDER_IMAGE": r.GoBuilderImage, "PROXYV2_IMAGE": r.ProxyImage, "ISTIO_VERSION": r.Istio, "ENVOY_VERSION": r.Envoy, "SDK_MODULE": r.SDK, "BUILD_TAG": r.BuildTag}
			for k, v := range want {
				if args[k] != v {
					t.Errorf("make %s ISTIO_VERSION=%s: --build-arg %s=%q, want %q", target, r.Istio, k, args[k], v)
				}
			}
			for _, name := range []string{"proxyv2", "library", "library-init"} {
				s := byName[name]
				vals := map[string]string{}
				for k, v := range s.args {
					vals[k] = v
				}
				for k, v := range args {
					vals[k] = v
				}
				for label, want := range map[string]string{"io.leanmesh.istio-version": r.Istio, "io.leanmesh.envoy-version": r.Envoy, "io.leanmesh.sdk-module": "github.com/envoyproxy/envoy@" + r.SDK} {
					if got := expand(s.labels[label], vals); got != want {
						t.Errorf("row %s stage %s: LABEL %s=%q, want %q", r.Istio, name, label, got, want)
					}
				}
			}
		}
		release := r.GoBuilderImage[strings.LastIndex(r.GoBuilderImage, "-")+1:]
		if g, ok := builderGlibc[release]; !ok || g != r.BuilderGlibc {
			t.Errorf("row %s: builder %s is Debian %s (glibc %s), matrix says %s", r.Istio, r.GoBuilderImage, release, g, r.BuilderGlibc)
		}
	}
}

// checkCopiesAllowed fails for a COPY source of the build stage b that
// Dockerfile.dockerignore (an allowlist: `*` then `!path`) keeps out of the
// context: the image build would fail on it.
func checkCopiesAllowed(t *testing.T, b *stage) {
	t.Helper()
	ignore, err := os.ReadFile("Dockerfile.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range b.copies {
		for _, src := range c.src {
			if !strings.Contains(string(ignore), "!"+src) {
				t.Errorf("COPY source %s is excluded by Dockerfile.dockerignore", src)
			}
		}
	}
}

func declaredInAnyStage(stages []*stage, k string) bool {
	for _, s := range stages {
		if _, ok := s.args[k]; ok {
			return true
		}
	}
	return false
}

// makeBuildArgs runs `make -n <target>` (prints, runs nothing) and collects
// the --build-arg pairs of its docker build lines.
func makeBuildArgs(t *testing.T, target, istio string) map[string]string {
	t.Helper()
	cmd := exec.Command("make", "-s", "-n", "-C", "..", target, "ISTIO_VERSION="+istio)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n %s: %v\n%s", target, err, out)
	}
	args := map[string]string{}
	n := 0
	// make -n prints a recipe as written: join its continuation lines first.
	for _, line := range strings.Split(strings.ReplaceAll(string(out), "\\\n", " "), "\n") {
		if !strings.Contains(line, "build -f envoy-build/Dockerfile") {
			continue
		}
		n++
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "--build-arg" {
				k, v, _ := strings.Cut(f[i+1], "=")
				args[k] = v
			}
		}
	}
	if n == 0 {
		t.Fatalf("make -n %s printed no docker build:\n%s", target, out)
	}
	return args
}
