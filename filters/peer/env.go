package peer

import (
	"bufio"
	"bytes"
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
