package envoybuild

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestMatrixParses(t *testing.T) {
	m, err := Load("versions.tsv")
	if err != nil {
		t.Fatal(err)
	}
	if d := m.Default(); d.Istio == "" {
		t.Fatal("no default row")
	}
	seen := map[string]bool{}
	for _, r := range m {
		if seen[r.Envoy] {
			t.Errorf("two rows for Envoy %s: the pod label leanmesh.io/envoy-version would be ambiguous", r.Envoy)
		}
		seen[r.Envoy] = true
		if !strings.HasSuffix(r.ProxyImage, ":"+r.Istio) {
			t.Errorf("row %s: proxyv2_image %s is not the release's image", r.Istio, r.ProxyImage)
		}
	}
	for _, bad := range []string{
		"1.31.1 1.39.1 v1.39.0 envoy1.39 g 2.36 p 2.39 default\n", // SDK != Envoy
		"1.31.1 1.39.1 v1.39.1 envoy1.38 g 2.36 p 2.39 default\n", // wrong tag
		"1.31.1 1.39.1 v1.39.1 envoy1.39 g 2.40 p 2.39 default\n", // builder glibc too new
		"1.31.1 1.39.1 v1.39.1 envoy1.39 g 2.36 p 2.39 -\n",       // no default
	} {
		if _, err := Parse(strings.NewReader(bad)); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

// TestSoMatrix checks every library `make so-matrix` built (bin/so-matrix.tsv)
// against its matrix row: Envoy's entry points exported (the list read from
// the row's SDK dso.cc), host functions imported, only libc linked, no glibc
// symbol newer than the row's proxy image, and the row's SDK and build tag in
// the build info. Rows the script skipped (SDK not served here) are logged.
func TestSoMatrix(t *testing.T) {
	m, err := Load("versions.tsv")
	if err != nil {
		t.Fatal(err)
	}
	status, err := readManifest("../bin/so-matrix.tsv")
	if err != nil {
		if os.Getenv("LEANMESH_REQUIRE_SO_MATRIX") != "" {
			t.Fatalf("%v (run make so-matrix)", err)
		}
		t.Skipf("%v: run make so-matrix first (make test does)", err)
	}
	modcache := goEnv(t, "GOMODCACHE")
	for _, r := range m {
		t.Run("istio"+r.Istio, func(t *testing.T) {
			st, ok := status[r.Istio]
			switch {
			case !ok:
				t.Fatalf("row not in bin/so-matrix.tsv: re-run make so-matrix")
			case st[4] == "skipped":
				if r.Default {
					t.Fatalf("the default row was skipped: %s", st[6])
				}
				t.Skipf("not built here: %s", st[6])
			case st[4] != "built":
				t.Fatalf("so-matrix: %s %s", st[4], st[6])
			case st[1] != r.Envoy || st[2] != r.SDK || st[3] != r.BuildTag:
				t.Fatalf("bin/so-matrix.tsv is stale (%v): re-run make so-matrix", st)
			}
			exports, err := RequiredExports(filepath.Join(modcache, "github.com/envoyproxy/envoy@"+r.SDK))
			if err != nil {
				t.Logf("SDK sources not readable (%v): using the built-in export list", err)
				exports = FallbackExports
			}
			rep, err := CheckLibrary(repoPath(st[5]), Expect{
				MaxGlibc: r.ProxyGlibc, Exports: exports, Imports: DefaultImports, SDK: r.SDK, BuildTag: r.BuildTag,
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range rep.Problems {
				t.Error(p)
			}
			t.Logf("%s: %d bytes, links %v, GLIBC_%s (proxy %s), SDK %s, tags %s, %d entry points",
				st[5], rep.Size, rep.Libs, rep.MaxGlibc, r.ProxyGlibc, rep.SDK, rep.BuildTags, len(exports))
		})
	}
}

func TestRequiredExportsMatchFallback(t *testing.T) {
	m, _ := Load("versions.tsv")
	dir := filepath.Join(goEnv(t, "GOMODCACHE"), "github.com/envoyproxy/envoy@"+m.Default().SDK)
	got, err := RequiredExports(dir)
	if err != nil {
		// go.mod requires the default SDK, so the module cache has it.
		t.Fatalf("default SDK sources: %v", err)
	}
	if strings.Join(got, ",") != strings.Join(FallbackExports, ",") {
		t.Errorf("dso.cc of %s loads %v; FallbackExports is %v", m.Default().SDK, got, FallbackExports)
	}
}

// repoPath resolves a manifest path (relative to the repository root, or
// absolute when make passed an absolute BIN).
func repoPath(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join("..", p)
}

func readManifest(path string) (map[string][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "#") {
			continue
		}
		cols := strings.Split(sc.Text(), "\t")
		if len(cols) == 7 {
			out[cols[0]] = cols
		}
	}
	return out, sc.Err()
}

func goEnv(t *testing.T, key string) string {
	t.Helper()
	out, err := exec.Command("go", "env", key).Output()
	if err != nil {
		t.Fatalf("go env %s: %v", key, err)
	}
	return strings.TrimSpace(string(out))
}

// The check must fail loudly, not just pass: a too-old proxy glibc, a missing
// entry point and a wrong SDK are each reported.
func TestCheckLibraryCatches(t *testing.T) {
	status, err := readManifest("../bin/so-matrix.tsv")
	if err != nil {
		if os.Getenv("LEANMESH_REQUIRE_SO_MATRIX") != "" {
			t.Fatalf("%v (run make so-matrix)", err)
		}
		t.Skipf("%v: run make so-matrix first (make test does)", err)
	}
	m, _ := Load("versions.tsv")
	st, ok := status[m.Default().Istio]
	if !ok || st[4] != "built" {
		t.Fatalf("bin/so-matrix.tsv lists no built library for the default row: %v", st)
	}
	rep, err := CheckLibrary(repoPath(st[5]), Expect{MaxGlibc: "2.17", Exports: []string{"envoyGoNoSuchEntry"}, SDK: "v0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(rep.Problems, "\n")
	for _, want := range []string{"needs GLIBC_", "envoyGoNoSuchEntry not exported", "built with SDK"} {
		if !strings.Contains(joined, want) {
			t.Errorf("problems %q lack %q", joined, want)
		}
	}
}
