package peer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
)

// Envoy v1.39's golang HTTP filter builds its attribute activation without
// the server's LocalInfo, so `xds.node` is "not found" from Go. The sidecar's
// own identity is still at hand: pilot-agent, Envoy's parent, builds the node
// from its environment (the injector's POD_NAME, POD_NAMESPACE, INSTANCE_IP,
// SERVICE_ACCOUNT and ISTIO_META_* variables) and the downward-API labels
// file, and Envoy inherits that environment. NodeFromEnv rebuilds the same
// node from the same inputs.

// DefaultPodLabelsPath is where Istio's injector mounts the pod's labels.
const DefaultPodLabelsPath = "/etc/istio/pod/labels"

// EnvNodeOptions say how to rebuild the node id.
type EnvNodeOptions struct {
	Type          string // "sidecar" (default) or "router" for gateways
	ClusterDomain string // default "cluster.local"
}

// NodeFromEnv builds the node the way pilot-agent does: every ISTIO_META_X
// variable becomes metadata key X, NAME/NAMESPACE/LABELS/SERVICE_ACCOUNT come
// from the pod's variables and labels, and the id is
// "<type>~<ip>~<pod>.<ns>~<ns>.svc.<domain>". It fails when the environment
// does not look like an Istio sidecar (no POD_NAME/POD_NAMESPACE).
func NodeFromEnv(environ []string, labels map[string]string, opts EnvNodeOptions) (*Node, error) {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	pod, ns := env["POD_NAME"], env["POD_NAMESPACE"]
	if pod == "" || ns == "" {
		return nil, fmt.Errorf("environment has no POD_NAME/POD_NAMESPACE: not an Istio sidecar")
	}
	fields := map[string]interface{}{}
	for k, v := range env {
		if key, ok := strings.CutPrefix(k, "ISTIO_META_"); ok && key != "" {
			fields[key] = v
		}
	}
	fields[KeyName] = pod
	fields[KeyNamespace] = ns
	if sa := env["SERVICE_ACCOUNT"]; sa != "" {
		fields[KeyServiceAccount] = sa
	}
	ls := map[string]interface{}{}
	for k, v := range labels {
		ls[k] = v
	}
	fields[KeyLabels] = ls
	meta, err := structpb.NewStruct(fields)
	if err != nil {
		return nil, fmt.Errorf("node metadata from environment: %v", err)
	}
	typ := opts.Type
	if typ == "" {
		typ = "sidecar"
	}
	domain := opts.ClusterDomain
	if domain == "" {
		domain = "cluster.local"
	}
	ip := env["INSTANCE_IP"]
	return &Node{
		ID:       fmt.Sprintf("%s~%s~%s.%s~%s.svc.%s", typ, ip, pod, ns, ns, domain),
		Metadata: meta,
	}, nil
}

// ReadPodLabels parses a downward-API labels file: one `key="value"` per
// line, values quoted as Go strings. A missing file is no labels.
func ReadPodLabels(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	return ParsePodLabels(b)
}

// ParsePodLabels parses the downward-API labels format.
func ParsePodLabels(b []byte) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("pod labels line %d: no '='", n)
		}
		uv, err := strconv.Unquote(v)
		if err != nil {
			return nil, fmt.Errorf("pod labels line %d: value %s: %v", n, v, err)
		}
		out[k] = uv
	}
	return out, sc.Err()
}

// ProcessIstioVersion is BootstrapIstioVersion for the running process:
// leanmesh.so lives inside Envoy, whose command line names the bootstrap.
func ProcessIstioVersion() (string, error) {
	cmdline, err := os.ReadFile("/proc/self/cmdline")
	if err != nil {
		return "", err
	}
	cwd, _ := os.Getwd()
	return BootstrapIstioVersion(cmdline, cwd, os.ReadFile)
}

// BootstrapIstioVersion returns node.metadata.ISTIO_VERSION of the Envoy
// bootstrap named on cmdline (NUL-separated, as /proc/<pid>/cmdline) by -c
// or --config-path. pilot-agent writes that file (etc/istio/proxy/
// envoy-rev.json, relative to its working directory) with its own version
// when ISTIO_META_ISTIO_VERSION is not set (pkg/bootstrap/config.go,
// SetIstioVersion); it is the value Istio's stats filter reports as
// istio_build's tag. An error means no bootstrap or no version in it.
func BootstrapIstioVersion(cmdline []byte, cwd string, readFile func(string) ([]byte, error)) (string, error) {
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	path := ""
	for i, a := range args {
		switch {
		case (a == "-c" || a == "--config-path") && i+1 < len(args):
			path = args[i+1]
		case strings.HasPrefix(a, "--config-path="):
			path = strings.TrimPrefix(a, "--config-path=")
		}
	}
	if path == "" {
		return "", fmt.Errorf("no -c/--config-path on the command line")
	}
	if !strings.HasPrefix(path, "/") && cwd != "" {
		path = strings.TrimSuffix(cwd, "/") + "/" + path
	}
	b, err := readFile(path)
	if err != nil {
		return "", fmt.Errorf("bootstrap: %v", err)
	}
	var boot struct {
		Node struct {
			Metadata map[string]json.RawMessage `json:"metadata"`
		} `json:"node"`
	}
	if err := json.Unmarshal(b, &boot); err != nil {
		return "", fmt.Errorf("bootstrap %s: %v", path, err)
	}
	var v string
	if raw, ok := boot.Node.Metadata[KeyIstioVersion]; !ok || json.Unmarshal(raw, &v) != nil || v == "" {
		return "", fmt.Errorf("bootstrap %s: no node.metadata.%s", path, KeyIstioVersion)
	}
	return v, nil
}
