package leanmesh

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	envoybuild "github.com/leanmesh/leanmesh/envoy-build"
	"github.com/leanmesh/leanmesh/envoy-build/podpatch"
)

var update = flag.Bool("update", false, "rewrite testdata/library-install-*.yaml")

// installCases: the chart's library install paths and the podpatch options
// that must render the same patch.
var installCases = []struct {
	name      string
	overrides map[string]string
	want      podpatch.Options
}{
	{"image", nil, podpatch.Options{Mode: podpatch.ModeImage, EnvoyVersion: "1.39.1", Image: "ghcr.io/leanmesh/proxyv2:1.31.1-leanmesh0.1.0"}},
	{"mount-imageVolume", map[string]string{"library.install": "mount"},
		podpatch.Options{Mode: podpatch.ModeImageVolume, EnvoyVersion: "1.39.1", Image: "ghcr.io/leanmesh/leanmesh-library:0.1.0-envoy1.39.1"}},
	{"mount-initContainer", map[string]string{"library.install": "mount", "library.mount.method": "initContainer"},
		podpatch.Options{Mode: podpatch.ModeInitContainer, EnvoyVersion: "1.39.1", Image: "ghcr.io/leanmesh/leanmesh-library:0.1.0-envoy1.39.1-init"}},
	{"mount-initContainer-istio1.29", map[string]string{
		"library.install": "mount", "library.mount.method": "initContainer", "library.istioRelease": "1.29.2", "library.envoyVersion": "1.37.1",
		"library.path": "/opt/leanmesh/lib/leanmesh-1.37.so", "library.mount.image": "registry.example/lm-init:1", "library.mount.pullPolicy": "Always"},
		podpatch.Options{Mode: podpatch.ModeInitContainer, EnvoyVersion: "1.37.1", Image: "registry.example/lm-init:1", LibraryPath: "/opt/leanmesh/lib/leanmesh-1.37.so", PullPolicy: "Always"}},
}

func libraryConfigMap(t *testing.T, overrides map[string]string) map[string]any {
	t.Helper()
	cm := find(mustTemplate(t, "", overrides), "ConfigMap", releaseName+"-library-install")
	if cm == nil {
		t.Fatal("no library-install ConfigMap")
	}
	return cm.Object
}

// TestLibraryInstallGolden pins the ConfigMap of each install path and checks
// its patch.yaml equals envoy-build/podpatch's for the same choices.
func TestLibraryInstallGolden(t *testing.T) {
	for _, c := range installCases {
		t.Run(c.name, func(t *testing.T) {
			cm := libraryConfigMap(t, c.overrides)
			got, err := yaml.Marshal(cm)
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join("testdata", "library-install-"+c.name+".yaml")
			if *update {
				if err := os.WriteFile(file, got, 0o644); err != nil {
					t.Fatal(err)
				}
			} else if want, err := os.ReadFile(file); err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s differs (go test ./charts/leanmesh -update to accept): %v\n%s", file, err, got)
			}

			data := cm["data"].(map[string]any)
			var chartPatch, rendererPatch any
			if err := yaml.UnmarshalStrict([]byte(data["patch.yaml"].(string)), &chartPatch); err != nil {
				t.Fatalf("patch.yaml: %v\n%s", err, data["patch.yaml"])
			}
			p, err := podpatch.Render(c.want)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := p.YAML()
			if err := yaml.Unmarshal(b, &rendererPatch); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(chartPatch, rendererPatch) {
				t.Errorf("chart patch.yaml differs from envoy-build/podpatch:\nchart:\n%s\npodpatch:\n%s", data["patch.yaml"], b)
			}
		})
	}
}

// The chart's release defaults are the matrix's default row, and its image
// names are the ones `make image` / `make library-image` push.
func TestLibraryDefaultsMatchMatrixAndMake(t *testing.T) {
	m, err := envoybuild.Load("../../envoy-build/versions.tsv")
	if err != nil {
		t.Fatal(err)
	}
	lib := readYAML(t, "values.yaml")["library"].(map[string]any)
	if def := m.Default(); lib["istioRelease"] != def.Istio || lib["envoyVersion"] != def.Envoy {
		t.Errorf("values library.istioRelease/envoyVersion = %v/%v, matrix default row %s/%s", lib["istioRelease"], lib["envoyVersion"], def.Istio, def.Envoy)
	}
	for _, r := range m {
		out, err := exec.Command("make", "-s", "-C", "../..", "print-images", "ISTIO_VERSION="+r.Istio).CombinedOutput()
		if err != nil {
			t.Fatalf("make print-images: %v\n%s", err, out)
		}
		images := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			k, v, _ := strings.Cut(l, "=")
			images[k] = v
		}
		row := map[string]string{"library.istioRelease": r.Istio, "library.envoyVersion": r.Envoy}
		for mode, key := range map[string]string{"image": "PROXY_IMAGE", "imageVolume": "LIBRARY_IMAGE", "initContainer": "LIBRARY_INIT_IMAGE"} {
			o := map[string]string{"library.install": "mount", "library.mount.method": mode}
			if mode == "image" {
				o = map[string]string{}
			}
			for k, v := range row {
				o[k] = v
			}
			patch := libraryConfigMap(t, o)["data"].(map[string]any)["patch.yaml"].(string)
			if !strings.Contains(patch, images[key]) {
				t.Errorf("Istio %s %s: chart patch does not use %s=%s:\n%s", r.Istio, mode, key, images[key], patch)
			}
		}
	}
}
