package peer

import "testing"

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
