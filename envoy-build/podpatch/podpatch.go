// Package podpatch renders the pod-template patch that gets leanmesh.so into
// a workload's stock Istio sidecar and labels the pod for leanmesh's
// EnvoyFilters. It is pure (same options, same patch), so the Helm chart,
// `make pod-patch` and the docs all show what the golden tests pin.
//
// The patch is a strategic-merge patch of a workload with a pod template
// (Deployment, StatefulSet, DaemonSet, ...):
//
//	kubectl patch deployment/<name> --patch-file leanmesh-patch.yaml
//
// Modes:
//   - image: the proxy runs a proxyv2 image that already contains the
//     library (annotation sidecar.istio.io/proxyImage).
//   - imageVolume: the stock proxy mounts the library-only image as a
//     Kubernetes image volume (feature gate ImageVolume: alpha in 1.31, beta
//     in 1.33; also needs runtime support), declared through Istio's
//     sidecar.istio.io/userVolume and userVolumeMount annotations, so the
//     patch only touches pod metadata.
//   - initContainer: an init container copies the library into an emptyDir
//     that the stock proxy mounts (userVolumeMount). Works on any cluster.
//
// Every mode sets the label leanmesh.io/envoy-version: the EnvoyFilters only
// select labelled pods, so a pod is never told to load a library it lacks.
//
// Every mode also makes the exposition a scrape target by construction
// (docs/exposition.md): it declares the named container port leanmesh-prom
// (15095) on istio-proxy (the injector merges a user-declared istio-proxy
// container into the injected one; image "auto" keeps the injected image,
// istio pkg/kube/inject/webhook.go reapplyOverwrittenContainers), and excludes
// 15095 from inbound capture, so the plaintext scrape reaches the listener
// directly: STRICT mTLS would reject it, PERMISSIVE would record every scrape
// as inbound traffic.
package podpatch

import (
	"encoding/json"
	"fmt"
	"path"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
)

// Mode is how the library reaches the proxy.
type Mode string

const (
	ModeImage         Mode = "image"
	ModeImageVolume   Mode = "imageVolume"
	ModeInitContainer Mode = "initContainer"
)

// Names shared with the controller, the chart and the images.
const (
	AnnotationProxyImage = "sidecar.istio.io/proxyImage"
	AnnotationVolume     = "sidecar.istio.io/userVolume"
	AnnotationMount      = "sidecar.istio.io/userVolumeMount"
	// AnnotationNativeSidecar=false keeps istio-proxy a regular container:
	// Istio moves a native-sidecar istio-proxy in front of all other init
	// containers, so it would start (and be sent the EnvoyFilters) before the
	// copy ran.
	AnnotationNativeSidecar = "sidecar.istio.io/nativeSidecar"

	DefaultLibraryPath = "/etc/leanmesh/leanmesh.so" // = controller/render.DefaultLibraryPath
	// ImageLibraryFile is where the library-only images hold the library.
	ImageLibraryFile = "/leanmesh.so"
	VolumeName       = "leanmesh"

	// The scrape target (monitoring/ builds the PodMonitor and scrape job from these).
	ProxyContainer  = "istio-proxy"
	MetricsPortName = "leanmesh-prom" // like Istio's http-envoy-prom; at most 15 characters
	MetricsPort     = 15095           // = controller/render.DefaultExposePort
	// AnnotationExcludeInboundPorts keeps MetricsPort out of the inbound capture.
	AnnotationExcludeInboundPorts = "traffic.sidecar.istio.io/excludeInboundPorts"
	// autoImage tells the injector to keep its own proxy image.
	autoImage     = "auto"
	InitContainer = "leanmesh-install"
	initMountPath = "/leanmesh"
)

// Options select the mode and the images.
type Options struct {
	Mode         Mode
	EnvoyVersion string // the matrix row's Envoy, the label value
	// Image is the proxyv2+leanmesh image (image mode), the library-only
	// image (imageVolume) or the library image with a cp (initContainer).
	Image       string
	LibraryPath string            // where the proxy loads the library; default DefaultLibraryPath
	PullPolicy  corev1.PullPolicy // default IfNotPresent
}

// Patch is the strategic-merge patch: spec.template of a workload.
type Patch struct {
	Spec struct {
		Template Template `json:"template"`
	} `json:"spec"`
}

// Template is the pod template part of the patch.
type Template struct {
	Metadata Metadata `json:"metadata"`
	Spec     *PodSpec `json:"spec,omitempty"`
}

// Metadata holds the label and the Istio annotations.
type Metadata struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// PodSpec holds the istio-proxy port declaration and what initContainer
// mode adds to the pod.
type PodSpec struct {
	Volumes        []corev1.Volume       `json:"volumes,omitempty"`
	InitContainers []corev1.Container    `json:"initContainers,omitempty"`
	Containers     []ProxyContainerPatch `json:"containers"`
}

// ProxyContainerPatch is the istio-proxy container as the patch declares it:
// only a name, the "auto" image and the port (a corev1.Container would add
// an empty resources block the injector would merge too).
type ProxyContainerPatch struct {
	Name  string                 `json:"name"`
	Image string                 `json:"image"`
	Ports []corev1.ContainerPort `json:"ports"`
	Env   []corev1.EnvVar        `json:"env,omitempty"`
}

// GOMAXPROCS for the library's Go runtime (Envoy inherits istio-proxy's
// environment): Istio's 2 workers + 2, so the runtime's background work (GC
// workers, sysmon) does not take the workers' Ps. Measured in
// docs/performance.md ("Runtime setting"): -1.3 µs CPU per request at 2
// workers on 2 cores, no change at 1 worker.
const DefaultGOMAXPROCS = "4"

// Render builds the patch for o.
func Render(o Options) (*Patch, error) {
	if o.EnvoyVersion == "" {
		return nil, fmt.Errorf("podpatch: no Envoy version (the matrix row's envoy column)")
	}
	if o.Image == "" {
		return nil, fmt.Errorf("podpatch: mode %s needs an image", o.Mode)
	}
	if o.LibraryPath == "" {
		o.LibraryPath = DefaultLibraryPath
	}
	if o.PullPolicy == "" {
		o.PullPolicy = corev1.PullIfNotPresent
	}
	dir, file := path.Split(o.LibraryPath)
	dir = strings.TrimSuffix(dir, "/")
	if !path.IsAbs(o.LibraryPath) || !strings.HasSuffix(file, ".so") || dir == "" {
		return nil, fmt.Errorf("podpatch: library path %q must be an absolute path to a .so below /", o.LibraryPath)
	}
	// A mount hides what the proxy image has at that directory.
	for _, reserved := range []string{"/etc/istio", "/var/lib/istio", "/etc/certs", "/usr", "/lib", "/bin", "/sbin"} {
		if dir == "/etc" || dir == reserved || strings.HasPrefix(dir, reserved+"/") {
			return nil, fmt.Errorf("podpatch: library directory %s would hide the proxy image's own files: use a directory of its own such as /etc/leanmesh", dir)
		}
	}
	p := &Patch{}
	md := &p.Spec.Template.Metadata
	md.Labels = map[string]string{v1alpha1.LabelEnvoyVersion: o.EnvoyVersion}
	md.Annotations = map[string]string{AnnotationExcludeInboundPorts: strconv.Itoa(MetricsPort)}
	p.Spec.Template.Spec = &PodSpec{Containers: []ProxyContainerPatch{{
		Name:  ProxyContainer,
		Image: autoImage,
		Ports: []corev1.ContainerPort{{Name: MetricsPortName, ContainerPort: MetricsPort, Protocol: corev1.ProtocolTCP}},
		Env:   []corev1.EnvVar{{Name: "GOMAXPROCS", Value: DefaultGOMAXPROCS}},
	}}}
	mount := []corev1.VolumeMount{{Name: VolumeName, MountPath: dir, ReadOnly: true}}

	switch o.Mode {
	case ModeImage:
		if o.LibraryPath != DefaultLibraryPath {
			return nil, fmt.Errorf("podpatch: the proxy image holds the library at %s, not %s", DefaultLibraryPath, o.LibraryPath)
		}
		md.Annotations[AnnotationProxyImage] = o.Image
	case ModeImageVolume:
		// The image volume shows the image's root at the mount path.
		if "/"+file != ImageLibraryFile {
			return nil, fmt.Errorf("podpatch: the library image holds %s, so the library path must end in %s", ImageLibraryFile, ImageLibraryFile)
		}
		vol := []corev1.Volume{{Name: VolumeName, VolumeSource: corev1.VolumeSource{
			Image: &corev1.ImageVolumeSource{Reference: o.Image, PullPolicy: o.PullPolicy},
		}}}
		md.Annotations[AnnotationVolume] = mustJSON(vol)
		md.Annotations[AnnotationMount] = mustJSON(mount)
	case ModeInitContainer:
		// The volume goes into the pod spec, not the userVolume annotation:
		// the init container mounts it before injection adds annotation volumes,
		// and the API server rejects a template mounting an undeclared volume.
		limit := resource.MustParse("64Mi")
		t, f, uid := true, false, int64(1337)
		spec := p.Spec.Template.Spec
		spec.Volumes = []corev1.Volume{{Name: VolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: &limit}}}}
		spec.InitContainers = []corev1.Container{{
			Name:            InitContainer,
			Image:           o.Image,
			ImagePullPolicy: o.PullPolicy,
			Command:         []string{"cp", ImageLibraryFile, initMountPath + "/" + file},
			VolumeMounts:    []corev1.VolumeMount{{Name: VolumeName, MountPath: initMountPath}},
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
			},
			SecurityContext: &corev1.SecurityContext{
				RunAsUser: &uid, RunAsNonRoot: &t, AllowPrivilegeEscalation: &f, ReadOnlyRootFilesystem: &t,
				Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
		}}
		md.Annotations[AnnotationMount] = mustJSON(mount)
		md.Annotations[AnnotationNativeSidecar] = "false"
	default:
		return nil, fmt.Errorf("podpatch: mode %q is not image, imageVolume or initContainer", o.Mode)
	}
	return p, nil
}

// YAML is the patch as kubectl reads it.
func (p *Patch) YAML() ([]byte, error) { return yaml.Marshal(p) }

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only fixed types above
	}
	return string(b)
}
