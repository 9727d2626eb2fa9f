package peer

import (
	"os"
	"strings"
	"testing"
)

func TestNodeFromEnv(t *testing.T) {
	labels, err := ParsePodLabels([]byte("app=\"reviews\"\nversion=\"v2\"\nservice.istio.io/canonical-name=\"reviews\"\nservice.istio.io/canonical-revision=\"v2\"\nquoted=\"a\\\"b\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if labels["quoted"] != `a"b` {
		t.Fatalf("unquote: %q", labels["quoted"])
	}
	env := []string{"POD_NAME=reviews-v2-abc", "POD_NAMESPACE=default", "INSTANCE_IP=10.0.0.2", "SERVICE_ACCOUNT=bookinfo-reviews",
		"ISTIO_META_WORKLOAD_NAME=reviews-v2", "ISTIO_META_CLUSTER_ID=Kubernetes", "ISTIO_META_MESH_ID=cluster.local",
		"ISTIO_META_ISTIO_VERSION=1.31.1", "ISTIO_META_OWNER=kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v2", "PATH=/bin"}
	n, err := NodeFromEnv(env, labels, EnvNodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.ID != "sidecar~10.0.0.2~reviews-v2-abc.default~default.svc.cluster.local" {
		t.Errorf("id %q", n.ID)
	}
	l, err := LocalFromNode(n, EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w := l.Workload
	if w.Name != "reviews-v2" || w.Namespace != "default" || w.App != "reviews" || w.Version != "v2" || w.Cluster != "Kubernetes" || w.CanonicalService != "reviews" {
		t.Errorf("workload %+v", w)
	}
	got, err := Decode(l.HeaderValue)
	if err != nil || got.Name != "reviews-v2" {
		t.Errorf("header decodes to %+v, %v", got, err)
	}
	if _, err := NodeFromEnv([]string{"PATH=/bin"}, nil, EnvNodeOptions{}); err == nil {
		t.Error("a non-sidecar environment must be an error")
	}
	gw, _ := NodeFromEnv(env, nil, EnvNodeOptions{Type: "router", ClusterDomain: "corp.local"})
	if gw.ID != "router~10.0.0.2~reviews-v2-abc.default~default.svc.corp.local" {
		t.Errorf("gateway id %q", gw.ID)
	}
	if _, err := ParsePodLabels([]byte("novalue\n")); err == nil {
		t.Error("malformed labels line must fail")
	}
	if m, err := ReadPodLabels("/nonexistent/labels"); err != nil || len(m) != 0 {
		t.Errorf("missing file: %v %v", m, err)
	}
}

func TestBootstrapIstioVersion(t *testing.T) {
	files := map[string]string{
		"/etc/istio/proxy/envoy-rev.json": `{"node":{"id":"sidecar~10.0.0.1~p.ns~ns.svc.cluster.local","metadata":{"ISTIO_VERSION":"1.31.1","NAMESPACE":"ns"}}}`,
		"/tmp/noversion.json":             `{"node":{"metadata":{"NAMESPACE":"ns"}}}`,
		"/tmp/bad.json":                   `{`,
	}
	read := func(p string) ([]byte, error) {
		if s, ok := files[p]; ok {
			return []byte(s), nil
		}
		return nil, os.ErrNotExist
	}
	argv := func(a ...string) []byte { return []byte(strings.Join(a, "\x00") + "\x00") }
	for _, c := range []struct {
		name    string
		cmdline []byte
		cwd     string
		want    string // "" means an error
	}{
		// pilot-agent's envoy args (pkg/envoy/proxy.go, args): -c <ConfigPath>/envoy-rev.json, relative to /.
		{"pilot-agent's relative -c", argv("/usr/local/bin/envoy", "-c", "etc/istio/proxy/envoy-rev.json", "--drain-time-s", "45"), "/", "1.31.1"},
		{"absolute --config-path=", argv("envoy", "--config-path=/etc/istio/proxy/envoy-rev.json"), "/x", "1.31.1"},
		{"no config flag", argv("envoyhost", "--log-level", "3"), "/", ""},
		{"missing file", argv("envoy", "-c", "/nope.json"), "/", ""},
		{"no ISTIO_VERSION", argv("envoy", "-c", "/tmp/noversion.json"), "/", ""},
		{"malformed", argv("envoy", "-c", "/tmp/bad.json"), "/", ""},
	} {
		got, err := BootstrapIstioVersion(c.cmdline, c.cwd, read)
		if c.want == "" {
			if err == nil {
				t.Errorf("%s: got %q, want an error", c.name, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: got %q, %v; want %q", c.name, got, err, c.want)
		}
	}
}
