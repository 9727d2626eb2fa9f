// Package leanmesh holds only the Helm chart's test: helm is not installable
// here (not in Debian or npm), so the templates are rendered with Go's
// text/template and the few Helm functions they use, then parsed as YAML.
package leanmesh

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"text/template"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// helmFuncs are the Helm/sprig functions the templates may use; a template
// using another one fails this test, which keeps them portable.
var helmFuncs = template.FuncMap{
	"toYaml": func(v any) (string, error) {
		b, err := yaml.Marshal(v)
		return strings.TrimSuffix(string(b), "\n"), err
	},
	"nindent": func(n int, s string) string {
		pad := strings.Repeat(" ", n)
		return "\n" + pad + strings.ReplaceAll(s, "\n", "\n"+pad)
	},
	"quote": func(v any) string { return fmt.Sprintf("%q", fmt.Sprint(v)) },
	"default": func(d any, v ...any) any {
		if len(v) == 0 || v[0] == nil || reflect.ValueOf(v[0]).IsZero() {
			return d
		}
		return v[0]
	},
	"fail": func(msg string) (string, error) { return "", fmt.Errorf("fail: %s", msg) },
	"dir":  path.Dir,
	"base": path.Base,
}

func readYAML(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

// renderChart renders every template with values.yaml merged with overrides
// and returns the parsed documents.
func renderChart(t *testing.T, overrides map[string]any) ([]map[string]any, error) {
	t.Helper()
	chart := readYAML(t, "Chart.yaml")
	values := readYAML(t, "values.yaml")
	for k, v := range overrides {
		setPath(values, k, v)
	}
	top := map[string]any{
		"Values":  values,
		"Release": map[string]any{"Name": "leanmesh", "Namespace": "leanmesh-system"},
		"Chart":   map[string]any{"Name": chart["name"], "AppVersion": chart["appVersion"], "Version": chart["version"]},
	}
	files, err := filepath.Glob("templates/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	var docs []map[string]any
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		tpl, err := template.New(f).Option("missingkey=error").Funcs(helmFuncs).Parse(string(src))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var buf bytes.Buffer
		if err := tpl.Execute(&buf, top); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for _, doc := range strings.Split(buf.String(), "\n---\n") {
			var m map[string]any
			if err := yaml.UnmarshalStrict([]byte(doc), &m); err != nil {
				t.Fatalf("%s renders invalid YAML: %v\n%s", f, err, buf.String())
			}
			if len(m) > 0 {
				docs = append(docs, m)
			}
		}
	}
	return docs, nil
}

func setPath(m map[string]any, path string, v any) {
	parts := strings.Split(path, ".")
	for _, p := range parts[:len(parts)-1] {
		m = m[p].(map[string]any)
	}
	m[parts[len(parts)-1]] = v
}

// isHook: Helm hooks (the uninstall Job and its RBAC) are checked by
// TestUninstallHook, not counted with the release's objects.
func isHook(d map[string]any) bool {
	md, _ := d["metadata"].(map[string]any)
	ann, _ := md["annotations"].(map[string]any)
	_, ok := ann["helm.sh/hook"]
	return ok
}

func kinds(docs []map[string]any) []string {
	var out []string
	for _, d := range docs {
		if isHook(d) {
			continue
		}
		out = append(out, fmt.Sprint(d["kind"]))
	}
	sort.Strings(out)
	return out
}

func TestChartRenders(t *testing.T) {
	cases := []struct {
		name      string
		overrides map[string]any
		kinds     string
		err       string
	}{
		{name: "defaults", kinds: "ClusterRole ClusterRoleBinding ConfigMap Deployment Role RoleBinding Service ServiceAccount"},
		{name: "no leader election, no metrics service, existing SA",
			overrides: map[string]any{"leaderElection.enabled": false, "metrics.service.enabled": false, "serviceAccount.create": false, "serviceAccount.name": "x"},
			kinds:     "ClusterRole ClusterRoleBinding ConfigMap Deployment"},
		{name: "library mount", overrides: map[string]any{"library.install": "mount"}, kinds: "ClusterRole ClusterRoleBinding ConfigMap Deployment Role RoleBinding Service ServiceAccount"},
		{name: "lazy xDS and workload table",
			overrides: map[string]any{"lazyXDS.enabled": true, "workloadTable.enabled": true, "workloadTable.tlsSecret": "wt-tls"},
			kinds:     "ClusterRole ClusterRoleBinding ConfigMap Deployment Role RoleBinding Service Service ServiceAccount"},
		{name: "workload table without TLS", overrides: map[string]any{"workloadTable.enabled": true}, err: "workloadTable needs tlsSecret"},
		{name: "bad library install", overrides: map[string]any{"library.install": "curl"}, err: "library.install must be image or mount"},
		{name: "bad mount method", overrides: map[string]any{"library.install": "mount", "library.mount.method": "hostPath"}, err: "library.mount.method must be imageVolume or initContainer"},
		{name: "image volume, renamed file", overrides: map[string]any{"library.install": "mount", "library.path": "/etc/leanmesh/x.so"}, err: "must end in /leanmesh.so"},
		{name: "image, moved library", overrides: map[string]any{"library.path": "/opt/leanmesh/leanmesh.so"}, err: "cannot move it"},
		{name: "mount over /etc", overrides: map[string]any{"library.install": "mount", "library.path": "/etc/leanmesh.so"}, err: "must be one of its own"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			docs, err := renderChart(t, c.overrides)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(kinds(docs), " "); got != c.kinds {
				t.Errorf("kinds %s, want %s", got, c.kinds)
			}
		})
	}
}

func TestOptionalServicesArgs(t *testing.T) {
	docs, err := renderChart(t, map[string]any{"lazyXDS.enabled": true, "workloadTable.enabled": true, "workloadTable.plaintext": true})
	if err != nil {
		t.Fatal(err)
	}
	var all []byte
	for _, d := range docs {
		b, _ := yaml.Marshal(d)
		all = append(all, b...)
	}
	for _, want := range []string{"--lazyxds", "--lazyxds-als-address=:15014", "--lazyxds-als-host=leanmesh-controller.", "--workload-table-plaintext",
		"--workload-table-address=:15013", "name: grpc-als", "name: grpc-workloads", "targetPort: grpc-als"} {
		if !bytes.Contains(all, []byte(want)) {
			t.Errorf("chart lacks %q", want)
		}
	}
}

func TestDeploymentArgs(t *testing.T) {
	docs, err := renderChart(t, map[string]any{"image.tag": "v9"})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		if d["kind"] != "Deployment" {
			continue
		}
		b, _ := yaml.Marshal(d)
		for _, want := range []string{"image: ghcr.io/leanmesh/leanmesh:v9", "- controller", "--leader-elect=true", "--root-namespace=istio-system", "path: /readyz", "sidecar.istio.io/inject: \"false\""} {
			if !bytes.Contains(b, []byte(want)) {
				t.Errorf("deployment lacks %q:\n%s", want, b)
			}
		}
		return
	}
	t.Fatal("no Deployment")
}

// TestRBACMatchesGenerated keeps the chart's rules equal to what
// controller-gen derives from the +kubebuilder:rbac markers.
func TestRBACMatchesGenerated(t *testing.T) {
	raw, err := os.ReadFile("../../config/rbac/role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	generated := map[string][]rbacv1.PolicyRule{}
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var r struct {
			Kind  string              `json:"kind"`
			Rules []rbacv1.PolicyRule `json:"rules"`
		}
		if err := yaml.Unmarshal([]byte(doc), &r); err != nil {
			t.Fatal(err)
		}
		if r.Kind != "" {
			generated[r.Kind] = r.Rules
		}
	}
	docs, err := renderChart(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		kind := fmt.Sprint(d["kind"])
		if (kind != "ClusterRole" && kind != "Role") || isHook(d) {
			continue
		}
		b, _ := yaml.Marshal(d["rules"])
		var rules []rbacv1.PolicyRule
		if err := yaml.Unmarshal(b, &rules); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(rules, generated[kind]) {
			t.Errorf("chart %s rules differ from config/rbac/role.yaml:\nchart:     %+v\ngenerated: %+v", kind, rules, generated[kind])
		}
	}
}

func TestCRDsMatchGenerated(t *testing.T) {
	gen, err := filepath.Glob("../../config/crd/bases/*.yaml")
	if err != nil || len(gen) == 0 {
		t.Fatalf("no generated CRDs: %v", err)
	}
	for _, g := range gen {
		want, _ := os.ReadFile(g)
		got, err := os.ReadFile(filepath.Join("crds", filepath.Base(g)))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("crds/%s differs from %s (make generate copies it)", filepath.Base(g), g)
		}
	}
}

// TestUninstallHook: helm uninstall runs leanmesh uninstall as a pre-delete
// Job, with just the permissions it needs; it can be switched off.
func TestUninstallHook(t *testing.T) {
	docs, err := renderChart(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	var hooks []string
	var args []any
	for _, d := range docs {
		if !isHook(d) {
			continue
		}
		hooks = append(hooks, fmt.Sprint(d["kind"]))
		if d["kind"] == "Job" {
			spec := d["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
			args = spec["containers"].([]any)[0].(map[string]any)["args"].([]any)
		}
	}
	sort.Strings(hooks)
	if got := strings.Join(hooks, " "); got != "ClusterRole ClusterRoleBinding Job Role RoleBinding ServiceAccount" {
		t.Errorf("hook kinds %s", got)
	}
	if fmt.Sprint(args) != "[uninstall --namespace=leanmesh-system --deployment=leanmesh-controller]" {
		t.Errorf("job args %v", args)
	}
	docs, err = renderChart(t, map[string]any{"uninstallHook.enabled": false})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		if isHook(d) {
			t.Errorf("hook %v rendered while disabled", d["kind"])
		}
	}
}
