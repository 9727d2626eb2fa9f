// Command podpatch prints the pod-template patch that installs leanmesh.so
// into a workload's Istio sidecar (see envoy-build/podpatch). `make pod-patch`
// runs it with the image names the image targets push.
//
//	go run ./envoy-build/cmd/podpatch -istio 1.31.1 -mode imageVolume -image <library image> > patch.yaml
//	kubectl patch deployment/<name> --patch-file patch.yaml
package main

import (
	"flag"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"

	envoybuild "github.com/leanmesh/leanmesh/envoy-build"
	"github.com/leanmesh/leanmesh/envoy-build/podpatch"
)

func main() {
	matrix := flag.String("matrix", "envoy-build/versions.tsv", "the version matrix")
	istio := flag.String("istio", "", "Istio release of the proxies (a row of the matrix; default: the default row)")
	mode := flag.String("mode", string(podpatch.ModeImageVolume), "image | imageVolume | initContainer")
	image := flag.String("image", "", "proxyv2+leanmesh image (image), library image (imageVolume) or library-init image (initContainer)")
	libPath := flag.String("library-path", podpatch.DefaultLibraryPath, "where the proxy loads leanmesh.so (the TelemetryPolicy's libraryPath)")
	pull := flag.String("pull-policy", string(corev1.PullIfNotPresent), "image pull policy of the volume / init container")
	flag.Parse()

	m, err := envoybuild.Load(*matrix)
	if err != nil {
		fail(err)
	}
	row, err := m.Find(*istio)
	if err != nil {
		fail(err)
	}
	p, err := podpatch.Render(podpatch.Options{
		Mode: podpatch.Mode(*mode), EnvoyVersion: row.Envoy, Image: *image,
		LibraryPath: *libPath, PullPolicy: corev1.PullPolicy(*pull),
	})
	if err != nil {
		fail(err)
	}
	out, err := p.YAML()
	if err != nil {
		fail(err)
	}
	fmt.Printf("# leanmesh install patch: Istio %s (Envoy %s), mode %s\n# kubectl patch deployment/<name> --patch-file <this file>\n%s", row.Istio, row.Envoy, *mode, out)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "podpatch:", err)
	os.Exit(1)
}
