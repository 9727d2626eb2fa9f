package leanmesh

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// valueSets are the documented value combinations, one file each under
// testdata/values (each file says where it is documented), with the kinds
// they render. TestValueSetsCoverSchema keeps them covering every switch.
var valueSets = []struct {
	file  string
	kinds string
}{
	{"default.yaml", "ClusterRole ClusterRole ClusterRole ClusterRoleBinding ClusterRoleBinding ConfigMap Deployment PodDisruptionBudget Role RoleBinding Service ServiceAccount"},
	{"minimal.yaml", "ClusterRole ClusterRoleBinding ConfigMap Deployment"},
	{"metrics-plain.yaml", "ClusterRole ClusterRoleBinding ConfigMap Deployment PodDisruptionBudget PodMonitor Role RoleBinding Service ServiceAccount ServiceMonitor"},
	{"metrics-secure-servicemonitor.yaml", "ClusterRole ClusterRole ClusterRole ClusterRoleBinding ClusterRoleBinding ClusterRoleBinding ConfigMap Deployment PodDisruptionBudget Role RoleBinding Service ServiceAccount ServiceMonitor"},
	{"lazyxds-workloadtable-revision.yaml", "ClusterRole ClusterRole ClusterRole ClusterRole ClusterRole ClusterRoleBinding ClusterRoleBinding ClusterRoleBinding ClusterRoleBinding ConfigMap Deployment PodDisruptionBudget Role Role Role Role RoleBinding RoleBinding RoleBinding RoleBinding Service Service ServiceAccount"},
	{"lazyxds-no-leader-election.yaml", "ClusterRole ClusterRole ClusterRole ClusterRole ClusterRoleBinding ClusterRoleBinding ClusterRoleBinding ConfigMap Deployment PodDisruptionBudget Role Role RoleBinding RoleBinding Service ServiceAccount"},
	{"workloadtable-plaintext.yaml", "ClusterRole ClusterRole ClusterRole ClusterRole ClusterRoleBinding ClusterRoleBinding ClusterRoleBinding ConfigMap Deployment PodDisruptionBudget Role RoleBinding Service Service ServiceAccount"},
	{"library-mount-imagevolume.yaml", "ClusterRole ClusterRole ClusterRole ClusterRoleBinding ClusterRoleBinding ConfigMap Deployment PodDisruptionBudget Role RoleBinding Service ServiceAccount"},
	{"library-mount-initcontainer.yaml", "ClusterRole ClusterRole ClusterRole ClusterRoleBinding ClusterRoleBinding ConfigMap Deployment PodDisruptionBudget Role RoleBinding Service ServiceAccount"},
	{"proxystatus.yaml", "ClusterRole ClusterRole ClusterRole ClusterRoleBinding ClusterRoleBinding ConfigMap Deployment PodDisruptionBudget Role RoleBinding Service ServiceAccount"},
	{"scheduling-and-image.yaml", "ClusterRole ClusterRole ClusterRole ClusterRoleBinding ClusterRoleBinding ConfigMap Deployment PodDisruptionBudget Role RoleBinding Service ServiceAccount"},
}

func TestValueSetFilesListed(t *testing.T) {
	files, _ := filepath.Glob("testdata/values/*.yaml")
	var listed []string
	for _, s := range valueSets {
		listed = append(listed, filepath.Join("testdata", "values", s.file))
	}
	sort.Strings(listed)
	if !slices.Equal(files, listed) {
		t.Errorf("testdata/values holds %v, valueSets lists %v", files, listed)
	}
}

// TestHelmLint: `helm lint --strict` (templates, values.schema.json, Chart.yaml,
// NOTES.txt) passes for every documented value set.
func TestHelmLint(t *testing.T) {
	for _, s := range valueSets {
		t.Run(s.file, func(t *testing.T) {
			out, err := helm(t, nil, append([]string{"lint", "--strict", ".", "--namespace", releaseNS}, valueArgs(s.file, nil)...)...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, "0 chart(s) failed") {
				t.Errorf("helm lint:\n%s", out)
			}
		})
	}
}

func TestHelmTemplate(t *testing.T) {
	for _, s := range valueSets {
		t.Run(s.file, func(t *testing.T) {
			if got := kindsOf(mustTemplate(t, s.file, nil)); got != s.kinds {
				t.Errorf("kinds\n got %s\nwant %s", got, s.kinds)
			}
		})
	}
}

// TestRejectedValues: bad values fail at install time with a message, either
// from values.schema.json or from the templates' checks.
func TestRejectedValues(t *testing.T) {
	for _, c := range []struct {
		name string
		file string
		sets map[string]string
		raw  []string // --set (typed) flags
		err  string
	}{
		{name: "workload table without TLS", raw: []string{"workloadTable.enabled=true"}, err: "workloadTable needs tlsSecret"},
		{name: "bad library install", sets: map[string]string{"library.install": "curl"}, err: "library.install"},
		{name: "bad mount method", sets: map[string]string{"library.install": "mount", "library.mount.method": "hostPath"}, err: "library.mount.method"},
		{name: "image volume, renamed file", sets: map[string]string{"library.install": "mount", "library.path": "/etc/leanmesh/x.so"}, err: "must end in /leanmesh.so"},
		{name: "image, moved library", sets: map[string]string{"library.path": "/opt/leanmesh/leanmesh.so"}, err: "cannot move it"},
		{name: "mount over /etc", sets: map[string]string{"library.install": "mount", "library.path": "/etc/leanmesh.so"}, err: "must be one of its own"},
		{name: "misspelt key", raw: []string{"lazyXds.enabled=true"}, err: "additional properties 'lazyXds' not allowed"},
		{name: "bad log level", sets: map[string]string{"log.level": "verbose"}, err: "log.level"},
		{name: "bad revision", sets: map[string]string{"revision": "Canary_1"}, err: "revision"},
		{name: "port as string", sets: map[string]string{"metrics.port": "8443"}, err: "metrics.port"},
		{name: "ServiceMonitor without Service", raw: []string{"metrics.serviceMonitor.enabled=true", "metrics.service.enabled=false"}, err: "metrics.serviceMonitor.enabled needs metrics.service.enabled"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var extra []string
			for _, r := range c.raw {
				extra = append(extra, "--set", r)
			}
			_, err := helmTemplate(t, c.file, c.sets, extra...)
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("err = %v, want one containing %q", err, c.err)
			}
		})
	}
}

// TestValueSetsCoverSchema: across the value sets, every boolean in
// values.schema.json takes both values and every choice of library.install and
// library.mount.method is taken (the enums the templates branch on; the
// others are passed through and checked by the schema).
func TestValueSetsCoverSchema(t *testing.T) {
	var schema map[string]any
	raw, err := os.ReadFile("values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	want := map[string][]any{}
	var walk func(prefix string, s map[string]any)
	walk = func(prefix string, s map[string]any) {
		props, _ := s["properties"].(map[string]any)
		for k, v := range props {
			p := strings.TrimPrefix(prefix+"."+k, ".")
			sub := v.(map[string]any)
			switch {
			case sub["type"] == "boolean":
				want[p] = []any{true, false}
			case sub["enum"] != nil && (p == "library.install" || p == "library.mount.method"):
				want[p] = sub["enum"].([]any)
			}
			walk(p, sub)
		}
	}
	walk("", schema)
	defaults := readYAML(t, "values.yaml")
	seen := map[string][]any{}
	for _, s := range valueSets {
		v := mergeValues(defaults, readYAML(t, filepath.Join("testdata", "values", s.file)))
		for p := range want {
			if x, ok := lookup(v, p); ok && !slices.Contains(seen[p], x) {
				seen[p] = append(seen[p], x)
			}
		}
	}
	for p, vals := range want {
		for _, x := range vals {
			if !slices.Contains(seen[p], x) {
				t.Errorf("no value set has %s=%v", p, x)
			}
		}
	}
	if len(want) < 10 {
		t.Errorf("only %d switches found in values.schema.json: %v", len(want), want)
	}
}

func mergeValues(base, over map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if bm, ok := out[k].(map[string]any); ok {
			if om, ok := v.(map[string]any); ok {
				out[k] = mergeValues(bm, om)
				continue
			}
		}
		out[k] = v
	}
	return out
}

func lookup(m map[string]any, path string) (any, bool) {
	var cur any = m
	for _, p := range strings.Split(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = mm[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func TestDeploymentArgs(t *testing.T) {
	for _, c := range []struct {
		file      string
		want, not []string
	}{
		{"default.yaml", []string{"image: ghcr.io/leanmesh/leanmesh:" + chartAppVersion(t), "- controller", "--leader-elect=true",
			"--root-namespace=istio-system", "--metrics-bind-address=:8443", "--metrics-secure=true", "path: /readyz",
			`sidecar.istio.io/inject: "false"`, "topologyKey: kubernetes.io/hostname", "topologyKey: topology.kubernetes.io/zone",
			"runAsNonRoot: true", "readOnlyRootFilesystem: true"},
			[]string{"--istio-revision", "--lazyxds", "--workload-table", "--metrics-cert-dir"}},
		{"minimal.yaml", []string{"--metrics-bind-address=0", "--leader-elect=false", "serviceAccountName: existing-sa"},
			[]string{"topologySpreadConstraints", "name: metrics"}},
		{"metrics-plain.yaml", []string{"--metrics-bind-address=:8080", "--metrics-secure=false"}, nil},
		{"metrics-secure-servicemonitor.yaml", []string{"--metrics-cert-dir=/etc/leanmesh/metrics-tls", "secretName: leanmesh-metrics-tls"}, nil},
		{"lazyxds-workloadtable-revision.yaml", []string{"--istio-revision=canary-1-31", "--lazyxds", "--lazyxds-als-address=:15014",
			"--lazyxds-als-host=leanmesh-controller.leanmesh-system.svc.cluster.local", "--lazyxds-egress-namespaces=istio-system,lazy-egress",
			"--workload-table-tls-cert=/etc/leanmesh/workload-table-tls/tls.crt",
			"secretName: leanmesh-workload-table-tls", "name: grpc-als", "name: grpc-workloads",
			"--lazyxds-als-istio-ca=istiod-canary-1-31.istio-system.svc:15012", "--lazyxds-als-istio-token=/var/run/secrets/tokens/istio-token",
			"--lazyxds-als-identity=spiffe://cluster.local/ns/leanmesh-system/sa/leanmesh", "audience: istio-ca", "path: istio-token"}, nil},
		{"workloadtable-plaintext.yaml", []string{"--workload-table-plaintext", "--workload-table-address=:15013"}, []string{"workload-table-tls"}},
		{"scheduling-and-image.yaml", []string{"image: registry.example/leanmesh/leanmesh:0.1.0-rc1", "imagePullPolicy: Always",
			"whenUnsatisfiable: DoNotSchedule", "--log-format=text", "--root-namespace=istio-config", "priorityClassName: platform-critical",
			"name: regcred", "example.com/tier: platform"}, []string{"kubernetes.io/hostname"}},
	} {
		t.Run(c.file, func(t *testing.T) {
			objs := mustTemplate(t, c.file, nil)
			dep := find(objs, "Deployment", releaseName+"-controller")
			if dep == nil {
				t.Fatal("no Deployment")
			}
			b, _ := yaml.Marshal(dep.Object)
			for _, w := range c.want {
				if !bytes.Contains(b, []byte(w)) {
					t.Errorf("Deployment lacks %q", w)
				}
			}
			for _, n := range c.not {
				if bytes.Contains(b, []byte(n)) {
					t.Errorf("Deployment has %q", n)
				}
			}
			if t.Failed() {
				t.Logf("%s", b)
			}
		})
	}
}

// TestControllerImageMatchesMake: the chart's default image is the one
// `make controller-image` builds and tags.
func TestControllerImageMatchesMake(t *testing.T) {
	out, err := exec.Command("make", "-s", "-C", "../..", "print-images").CombinedOutput()
	if err != nil {
		t.Fatalf("make print-images: %v\n%s", err, out)
	}
	var want string
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "CONTROLLER_IMAGE="); ok {
			want = v
		}
	}
	dep := find(mustTemplate(t, "default.yaml", nil), "Deployment", releaseName+"-controller")
	containers, _, _ := unstructuredSlice(dep.Object, "spec", "template", "spec", "containers")
	if got := containers[0].(map[string]any)["image"]; want == "" || got != want {
		t.Errorf("chart default image %v, make controller-image tags %q", got, want)
	}
}

func unstructuredSlice(obj map[string]any, fields ...string) ([]any, bool, error) {
	var cur any = obj
	for _, f := range fields {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false, fmt.Errorf("%s is not a map", f)
		}
		cur = m[f]
	}
	s, ok := cur.([]any)
	return s, ok, nil
}

func chartAppVersion(t testing.TB) string {
	return fmt.Sprint(readYAML(t, "Chart.yaml")["appVersion"])
}

// generatedRules reads controller-gen's role.yaml for a feature: "ClusterRole"
// or "Role/<marker namespace>" -> rules.
func generatedRules(t *testing.T, path string) map[string][]rbacv1.PolicyRule {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]rbacv1.PolicyRule{}
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var r struct {
			Kind     string              `json:"kind"`
			Metadata metav1.ObjectMeta   `json:"metadata"`
			Rules    []rbacv1.PolicyRule `json:"rules"`
		}
		if err := yaml.Unmarshal([]byte(doc), &r); err != nil {
			t.Fatal(err)
		}
		switch r.Kind {
		case "":
		case "Role":
			out["Role/"+r.Metadata.Namespace] = r.Rules
		default:
			out[r.Kind] = r.Rules
		}
	}
	return out
}

// TestRBACPerFeature: the chart grants exactly the generated rules of the
// features a value set turns on, under the feature's label, and nothing of
// the others (no Deployment/Service writes without lazy xDS; the snapshot
// ConfigMap Role without leader election). Roles land where their marker
// namespace says: leanmesh-system is the release namespace, istio-system
// each lazy-egress namespace (the egress's writes, nowhere else).
func TestRBACPerFeature(t *testing.T) {
	egressNS := map[string][]string{
		"lazyxds-workloadtable-revision.yaml": {"istio-system", "lazy-egress"},
		"lazyxds-no-leader-election.yaml":     {"istio-system"},
	}
	features := map[string][]string{
		"default.yaml":                        {"core", "leader-election", "metrics-auth"},
		"minimal.yaml":                        {"core"},
		"metrics-plain.yaml":                  {"core", "leader-election"},
		"lazyxds-workloadtable-revision.yaml": {"core", "leader-election", "metrics-auth", "lazyxds", "workload-table"},
		"lazyxds-no-leader-election.yaml":     {"core", "metrics-auth", "lazyxds"},
		"workloadtable-plaintext.yaml":        {"core", "leader-election", "metrics-auth", "workload-table"},
	}
	for file, want := range features {
		t.Run(file, func(t *testing.T) {
			got := map[string]map[string][]rbacv1.PolicyRule{}
			var egressRoles []string
			for _, o := range mustTemplate(t, file, nil) {
				if (o.GetKind() != "ClusterRole" && o.GetKind() != "Role") || isHook(o) {
					continue
				}
				f := o.GetLabels()["leanmesh.io/rbac-feature"]
				if f == "" {
					if o.GetName() != releaseName+"-metrics-reader" {
						t.Errorf("%s %s has no leanmesh.io/rbac-feature label", o.GetKind(), o.GetName())
					}
					continue
				}
				var r rbacv1.ClusterRole
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &r); err != nil {
					t.Fatal(err)
				}
				if got[f] == nil {
					got[f] = map[string][]rbacv1.PolicyRule{}
				}
				key := o.GetKind()
				switch {
				case key == "Role" && o.GetNamespace() == releaseNS && !strings.HasSuffix(o.GetName(), "-egress"):
					key = "Role/leanmesh-system"
				case key == "Role":
					key = "Role/istio-system"
					egressRoles = append(egressRoles, o.GetNamespace())
					if prev, ok := got[f][key]; ok && !reflect.DeepEqual(prev, r.Rules) {
						t.Errorf("egress Roles differ: %+v vs %+v", prev, r.Rules)
					}
				}
				got[f][key] = r.Rules
			}
			sort.Strings(egressRoles)
			if !slices.Equal(egressRoles, egressNS[file]) {
				t.Errorf("lazy-egress Roles in %v, want %v", egressRoles, egressNS[file])
			}
			var names []string
			for f := range got {
				names = append(names, f)
			}
			sort.Strings(names)
			w := slices.Clone(want)
			sort.Strings(w)
			if !slices.Equal(names, w) {
				t.Errorf("features granted %v, want %v", names, w)
			}
			for f, byKind := range got {
				gen := generatedRules(t, filepath.Join("../../config/rbac", f, "role.yaml"))
				if !reflect.DeepEqual(byKind, gen) {
					t.Errorf("feature %s: chart rules differ from config/rbac/%s/role.yaml:\nchart: %+v\ngenerated: %+v", f, f, byKind, gen)
				}
			}
		})
	}
}

// The chart's copies of generated files are identical (make generate copies
// them; make verify also catches a stale copy).
func TestGeneratedCopies(t *testing.T) {
	pairs := map[string]string{}
	crds, _ := filepath.Glob("../../config/crd/bases/*.yaml")
	for _, g := range crds {
		pairs[g] = filepath.Join("crds", filepath.Base(g))
	}
	roles, _ := filepath.Glob("../../config/rbac/*/role.yaml")
	for _, g := range roles {
		pairs[g] = filepath.Join("files", "rbac", filepath.Base(filepath.Dir(g))+".yaml")
	}
	if len(crds) == 0 || len(roles) < 5 {
		t.Fatalf("generated files: %d CRDs, %d feature roles", len(crds), len(roles))
	}
	for gen, cp := range pairs {
		want, _ := os.ReadFile(gen)
		got, err := os.ReadFile(cp)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s (make generate copies it)", cp, gen)
		}
	}
	copies, _ := filepath.Glob("files/rbac/*.yaml")
	if len(copies) != len(roles) {
		t.Errorf("files/rbac has %d files, config/rbac %d features", len(copies), len(roles))
	}
}

// TestUninstallHook: helm uninstall runs leanmesh uninstall as a pre-delete
// Job, with just the permissions it needs; it can be switched off.
func TestUninstallHook(t *testing.T) {
	var hooks []string
	var args []any
	for _, o := range mustTemplate(t, "", nil) {
		if !isHook(o) {
			continue
		}
		hooks = append(hooks, o.GetKind())
		if o.GetKind() == "Job" {
			containers, _, _ := unstructuredSlice(o.Object, "spec", "template", "spec", "containers")
			args = containers[0].(map[string]any)["args"].([]any)
		}
	}
	sort.Strings(hooks)
	if got := strings.Join(hooks, " "); got != "ClusterRole ClusterRoleBinding Job Role RoleBinding ServiceAccount" {
		t.Errorf("hook kinds %s", got)
	}
	if fmt.Sprint(args) != "[uninstall --namespace=leanmesh-system --deployment=leanmesh-controller]" {
		t.Errorf("job args %v", args)
	}
	objs, err := helmTemplate(t, "", nil, "--set", "uninstallHook.enabled=false")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if isHook(o) {
			t.Errorf("hook %s rendered while disabled", o.GetKind())
		}
	}
}
