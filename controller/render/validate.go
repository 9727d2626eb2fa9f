package render

import (
	"encoding/json"
	"path"
	"regexp"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
)

// Checks run before anything is rendered, with the rules of the tools that
// would otherwise fail later and out of sight: istiod (proxyVersion),
// Envoy (listener ports), the library install paths (libraryPath), the
// Kubernetes label grammar (selectors) and etcd (object size). Each is a
// named, pure function so a validation chain can run them in order; the
// filter's own rules (label names, expressions) run in golangFilter through
// its parser. Every failure is an *Error: status Ready=False InvalidConfig,
// nothing applied.

// Check is one named validation of a defaulted spec.
type Check struct {
	Name string
	Fn   func(in Input, spec v1alpha1.TelemetryPolicySpec) error
}

// SpecChecks are the pre-render checks, in order.
var SpecChecks = []Check{
	{"selector", CheckSelector},
	{"exposition-port", CheckExpositionPort},
	{"library-path", CheckLibraryPath},
	{"proxy-version", CheckProxyVersion},
}

// ReservedProxyPorts are the ports Istio's sidecar itself listens on
// (istio.io docs, "Ports used by Istio"): an exposition listener on one of
// them makes istiod push two listeners on one address, which Envoy rejects.
var ReservedProxyPorts = map[int32]string{
	15000: "Envoy admin",
	15001: "Envoy outbound",
	15004: "debug",
	15006: "Envoy inbound",
	15008: "HBONE mTLS tunnel",
	15009: "HBONE (secure networks)",
	15020: "merged Prometheus telemetry",
	15021: "health checks",
	15053: "DNS proxy",
	15090: "Envoy Prometheus telemetry",
}

// CheckSelector validates label keys and values as the API server does for
// labels: an invalid key matches no pod, and the policy would be Ready for
// nothing.
func CheckSelector(_ Input, spec v1alpha1.TelemetryPolicySpec) error {
	keys := make([]string, 0, len(spec.Selector.MatchLabels))
	for k := range spec.Selector.MatchLabels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return invalid("spec.selector.matchLabels: key %q is not a valid label key: %s", k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(spec.Selector.MatchLabels[k]); len(errs) > 0 {
			return invalid("spec.selector.matchLabels[%s]: %q is not a valid label value: %s", k, spec.Selector.MatchLabels[k], strings.Join(errs, "; "))
		}
	}
	return nil
}

// CheckExpositionPort refuses ports the sidecar already uses.
func CheckExpositionPort(_ Input, spec v1alpha1.TelemetryPolicySpec) error {
	if spec.Exposition.Enabled != nil && !*spec.Exposition.Enabled {
		return nil
	}
	if what, ok := ReservedProxyPorts[spec.Exposition.Port]; ok {
		return invalid("spec.exposition.port: %d is the sidecar's %s port; pick another (default %d)", spec.Exposition.Port, what, DefaultExposePort)
	}
	return nil
}

// CheckLibraryPath accepts only a path an install path provides: the
// installed one(s) (Input.LibraryPaths, the chart's library.path), or when
// none is known, a path a mount could provide (absolute, a .so, not in a
// directory of the proxy image's own files — envoy-build/podpatch's rule).
// A missing library would make every listener that loads it fail,
// virtualInbound included.
func CheckLibraryPath(in Input, spec v1alpha1.TelemetryPolicySpec) error {
	p := spec.LibraryPath
	clean := path.Clean(p)
	dir, file := path.Split(clean)
	dir = strings.TrimSuffix(dir, "/")
	if !path.IsAbs(p) || clean != p || !strings.HasSuffix(file, ".so") || dir == "" {
		return invalid("spec.libraryPath: %q must be a clean absolute path to a .so file below /", p)
	}
	for _, reserved := range []string{"/etc/istio", "/var/lib/istio", "/etc/certs", "/usr", "/lib", "/bin", "/sbin"} {
		if dir == "/etc" || dir == reserved || strings.HasPrefix(dir, reserved+"/") {
			return invalid("spec.libraryPath: no install path mounts the library in %s (it would hide the proxy image's own files)", dir)
		}
	}
	if len(in.LibraryPaths) > 0 && !slices.Contains(in.LibraryPaths, p) {
		return invalid("spec.libraryPath: %q is not where the library is installed (%s); set spec.libraryPath to it or change the install's library.path",
			p, strings.Join(in.LibraryPaths, ", "))
	}
	return nil
}

// CheckProxyVersion compiles an explicit proxyVersion as istiod does
// (Go's RE2 regexp). istiod ignores an invalid regex at translation time
// and applies the patch to every proxy version, so the Envoy-version guard
// would silently be gone.
func CheckProxyVersion(_ Input, spec v1alpha1.TelemetryPolicySpec) error {
	if spec.ProxyVersion == "" {
		return nil
	}
	if _, err := regexp.Compile(spec.ProxyVersion); err != nil {
		return invalid("spec.proxyVersion: %q is not a valid regular expression (istiod would ignore it and patch every proxy version): %v", spec.ProxyVersion, err)
	}
	return nil
}

// MaxObjectBytes bounds each rendered object. etcd refuses requests over
// its --max-request-bytes (1.5 MiB by default) after the API server has
// accepted them; staying under 1 MiB leaves room for metadata and
// managedFields.
const MaxObjectBytes = 1 << 20

// CheckObjectSizes refuses a rendering with an object etcd would refuse,
// before any of them is applied.
func CheckObjectSizes(objs []client.Object) error {
	for _, o := range objs {
		b, err := json.Marshal(o)
		if err != nil {
			return err
		}
		if len(b) > MaxObjectBytes {
			return invalid("%s %s/%s would be %d KiB, over the %d KiB an object may take in etcd; reduce spec.metrics (dimensions are repeated per traffic context)",
				o.GetObjectKind().GroupVersionKind().Kind, o.GetNamespace(), o.GetName(), len(b)>>10, MaxObjectBytes>>10)
		}
	}
	return nil
}

// runSpecChecks runs SpecChecks in order; the first failure wins.
func runSpecChecks(in Input, spec v1alpha1.TelemetryPolicySpec) error {
	for _, c := range SpecChecks {
		if err := c.Fn(in, spec); err != nil {
			return err
		}
	}
	return nil
}
