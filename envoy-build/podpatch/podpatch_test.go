package podpatch

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite testdata/*.yaml from the renderer")

// goldenCases are the patches docs/install.md shows; the chart's test
// compares its rendered ConfigMaps with the same renderer.
var goldenCases = map[string]Options{
	"image":                     {Mode: ModeImage, EnvoyVersion: "1.39.1", Image: "ghcr.io/leanmesh/proxyv2:1.31.1-leanmesh0.1.0"},
	"imageVolume":               {Mode: ModeImageVolume, EnvoyVersion: "1.39.1", Image: "ghcr.io/leanmesh/leanmesh-library:0.1.0-envoy1.39.1"},
	"initContainer":             {Mode: ModeInitContainer, EnvoyVersion: "1.37.1", Image: "ghcr.io/leanmesh/leanmesh-library:0.1.0-envoy1.37.1-init", PullPolicy: corev1.PullAlways},
	"initContainer-custom-path": {Mode: ModeInitContainer, EnvoyVersion: "1.39.1", Image: "registry.example/leanmesh-init:1", LibraryPath: "/opt/leanmesh/lib/leanmesh-1.39.so"},
}

func TestGolden(t *testing.T) {
	for name, o := range goldenCases {
		t.Run(name, func(t *testing.T) {
			p, err := Render(o)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.YAML()
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join("testdata", name+".yaml")
			if *update {
				if err := os.WriteFile(file, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (go test ./envoy-build/podpatch -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the renderer (go test ./envoy-build/podpatch -update to accept):\n%s", file, got)
			}
		})
	}
}

// The annotations must be what Istio's injector parses: JSON arrays of
// Volumes / VolumeMounts (sidecar.istio.io/userVolume, userVolumeMount).
func TestAnnotationsAreIstioJSON(t *testing.T) {
	p, err := Render(goldenCases["imageVolume"])
	if err != nil {
		t.Fatal(err)
	}
	var vols []corev1.Volume
	var mounts []corev1.VolumeMount
	a := p.Spec.Template.Metadata.Annotations
	if err := yaml.UnmarshalStrict([]byte(a[AnnotationVolume]), &vols); err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict([]byte(a[AnnotationMount]), &mounts); err != nil {
		t.Fatal(err)
	}
	if len(vols) != 1 || vols[0].Image == nil || vols[0].Image.Reference != goldenCases["imageVolume"].Image {
		t.Errorf("volume %+v", vols)
	}
	if len(mounts) != 1 || mounts[0].MountPath != "/etc/leanmesh" || !mounts[0].ReadOnly || mounts[0].Name != vols[0].Name {
		t.Errorf("mount %+v", mounts)
	}
	if s := p.Spec.Template.Spec; len(s.Volumes) > 0 || len(s.InitContainers) > 0 || len(s.Containers) != 1 {
		t.Errorf("imageVolume must declare only the istio-proxy port in the pod spec: %+v", s)
	}
}

// Every install path makes the exposition a scrape target: the named port on
// istio-proxy (image "auto": the injector keeps its own image and merges the
// rest) and the inbound-capture exclusion. Applied to a Deployment with an
// app container, the patch adds istio-proxy next to it, touching nothing else.
func TestScrapeTargetInEveryMode(t *testing.T) {
	for name, o := range goldenCases {
		t.Run(name, func(t *testing.T) {
			p, err := Render(o)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Spec.Template.Metadata.Annotations[AnnotationExcludeInboundPorts]; got != "15095" {
				t.Errorf("%s = %q, want 15095", AnnotationExcludeInboundPorts, got)
			}
			raw, err := json.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			app := appsv1.Deployment{Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "app", Image: "app:1", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}},
			}}}}
			orig, _ := json.Marshal(app)
			merged, err := strategicpatch.StrategicMergePatch(orig, raw, appsv1.Deployment{})
			if err != nil {
				t.Fatal(err)
			}
			var out appsv1.Deployment
			if err := json.Unmarshal(merged, &out); err != nil {
				t.Fatal(err)
			}
			byName := map[string]corev1.Container{}
			for _, c := range out.Spec.Template.Spec.Containers {
				byName[c.Name] = c
			}
			if a := byName["app"]; len(byName) != 2 || a.Image != "app:1" || len(a.Ports) != 1 {
				t.Fatalf("want the app container unchanged plus istio-proxy: %+v", out.Spec.Template.Spec.Containers)
			}
			proxy := byName["istio-proxy"]
			want := corev1.ContainerPort{Name: "leanmesh-prom", ContainerPort: 15095, Protocol: corev1.ProtocolTCP}
			if proxy.Name != "istio-proxy" || proxy.Image != "auto" || len(proxy.Ports) != 1 || proxy.Ports[0] != want {
				t.Errorf("istio-proxy = %+v, want image auto and port %+v", proxy, want)
			}
			if errs := validation.IsValidPortName(proxy.Ports[0].Name); len(errs) > 0 {
				t.Errorf("port name: %v", errs)
			}
		})
	}
}

func TestEveryModeLabels(t *testing.T) {
	for name, o := range goldenCases {
		p, err := Render(o)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Spec.Template.Metadata.Labels[v1alpha1.LabelEnvoyVersion]; got != o.EnvoyVersion {
			t.Errorf("%s: label %q, want %q", name, got, o.EnvoyVersion)
		}
	}
}

func TestRejects(t *testing.T) {
	ok := Options{Mode: ModeImageVolume, EnvoyVersion: "1.39.1", Image: "x"}
	cases := map[string]func(*Options){
		"no envoy":           func(o *Options) { o.EnvoyVersion = "" },
		"no image":           func(o *Options) { o.Image = "" },
		"bad mode":           func(o *Options) { o.Mode = "hostPath" },
		"relative path":      func(o *Options) { o.LibraryPath = "leanmesh.so" },
		"hides /etc/istio":   func(o *Options) { o.LibraryPath = "/etc/istio/proxy/leanmesh.so" },
		"hides /etc":         func(o *Options) { o.LibraryPath = "/etc/leanmesh.so" },
		"image file name":    func(o *Options) { o.LibraryPath = "/etc/leanmesh/other.so" },
		"image mode, moved":  func(o *Options) { o.Mode = ModeImage; o.LibraryPath = "/opt/x/leanmesh.so" },
		"not a shared lib":   func(o *Options) { o.LibraryPath = "/etc/leanmesh/leanmesh" },
		"hides /usr/lib/...": func(o *Options) { o.Mode = ModeInitContainer; o.LibraryPath = "/usr/lib/leanmesh.so" },
	}
	for name, mut := range cases {
		o := ok
		mut(&o)
		if _, err := Render(o); err == nil {
			t.Errorf("%s: accepted %+v", name, o)
		} else if !strings.HasPrefix(err.Error(), "podpatch: ") {
			t.Errorf("%s: error %q", name, err)
		}
	}
	if _, err := Render(ok); err != nil {
		t.Fatal(err)
	}
}
