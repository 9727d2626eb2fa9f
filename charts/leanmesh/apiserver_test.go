package leanmesh

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/e2e/cluster"
)

// TestChartOnAPIServer installs the chart with helm itself into a real
// kube-apiserver (no kubelet: nothing runs, but every object is admitted and
// validated), upgrades it across feature sets and uninstalls it; and sends
// every documented value set's rendered objects to the API server as a
// server-side dry run.
func TestChartOnAPIServer(t *testing.T) {
	env := cluster.StartT(t, cluster.Options{
		// The chart's CRDs come from Helm itself (crds/); prometheus-operator's
		// for the ServiceMonitor.
		CRDPaths: []string{toolPath(t, "MONITORING_CRDS")},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kube := []string{"KUBECONFIG=" + env.Kubeconfig}
	// The lazy egress namespaces of the value sets get their Roles.
	for _, ns := range []string{releaseNS, "monitoring", "istio-system", "lazy-egress"} {
		if err := env.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("install, upgrade, uninstall", func(t *testing.T) {
		run := func(args ...string) string {
			t.Helper()
			out, err := helm(t, kube, args...)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("helm %s:\n%s", args[0], firstLines(out, 6))
			return out
		}
		out := run(append([]string{"install", releaseName, ".", "--namespace", releaseNS}, valueArgs("default.yaml", nil)...)...)
		// NOTES.txt, which only install/upgrade print, tells users where the patch is.
		if _, notes, ok := strings.Cut(out, "NOTES:"); !ok || !strings.Contains(notes, "leanmesh-library-install") {
			t.Errorf("helm install NOTES:\n%s", out)
		}
		for _, crd := range []string{"telemetrypolicies.leanmesh.io", "lazyxdses.leanmesh.io"} {
			mustExist(ctx, t, env.Client, "apiextensions.k8s.io/v1", "CustomResourceDefinition", "", crd)
		}
		mustExist(ctx, t, env.Client, "apps/v1", "Deployment", releaseNS, releaseName+"-controller")
		mustExist(ctx, t, env.Client, "policy/v1", "PodDisruptionBudget", releaseNS, releaseName+"-controller")
		mustExist(ctx, t, env.Client, "rbac.authorization.k8s.io/v1", "Role", releaseNS, releaseName+"-controller-leader-election")
		mustNotExist(ctx, t, env.Client, "rbac.authorization.k8s.io/v1", "ClusterRole", "", releaseName+"-controller-lazyxds")

		// Turning features on grants their permissions; off again removes them.
		run(append([]string{"upgrade", releaseName, ".", "--namespace", releaseNS}, valueArgs("lazyxds-workloadtable-revision.yaml", nil)...)...)
		mustExist(ctx, t, env.Client, "rbac.authorization.k8s.io/v1", "ClusterRole", "", releaseName+"-controller-lazyxds")
		mustExist(ctx, t, env.Client, "rbac.authorization.k8s.io/v1", "Role", releaseNS, releaseName+"-controller-lazyxds")
		for _, ns := range []string{"istio-system", "lazy-egress"} {
			mustExist(ctx, t, env.Client, "rbac.authorization.k8s.io/v1", "Role", ns, releaseName+"-controller-lazyxds-egress")
		}
		mustExist(ctx, t, env.Client, "rbac.authorization.k8s.io/v1", "ClusterRole", "", releaseName+"-controller-workload-table")
		run(append([]string{"upgrade", releaseName, ".", "--namespace", releaseNS}, valueArgs("minimal.yaml", nil)...)...)
		mustNotExist(ctx, t, env.Client, "rbac.authorization.k8s.io/v1", "ClusterRole", "", releaseName+"-controller-lazyxds")
		mustNotExist(ctx, t, env.Client, "rbac.authorization.k8s.io/v1", "Role", "istio-system", releaseName+"-controller-lazyxds-egress")
		mustNotExist(ctx, t, env.Client, "rbac.authorization.k8s.io/v1", "Role", releaseNS, releaseName+"-controller-leader-election")

		// Hooks would wait for Jobs that never run here (no kubelet).
		run("uninstall", releaseName, "--namespace", releaseNS, "--no-hooks")
		mustNotExist(ctx, t, env.Client, "apps/v1", "Deployment", releaseNS, releaseName+"-controller")
		// Helm never deletes crds/ (docs/install.md, upgrading).
		mustExist(ctx, t, env.Client, "apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "telemetrypolicies.leanmesh.io")
	})

	for _, s := range valueSets {
		t.Run("dry-run/"+s.file, func(t *testing.T) {
			objs := mustTemplate(t, s.file, nil)
			for _, o := range objs {
				if err := env.Client.Create(ctx, o, client.DryRunAll); err != nil {
					t.Errorf("%s %s: %v", o.GetKind(), o.GetName(), err)
				}
			}
		})
	}
}

// TestCRDUpgradePath: what docs/install.md tells users to run before `helm
// upgrade` (Helm never upgrades crds/) applies server-side over the CRDs of
// an install and makes the new schema live.
func TestCRDUpgradePath(t *testing.T) {
	env := cluster.StartT(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kube := []string{"KUBECONFIG=" + env.Kubeconfig}
	if err := env.CreateNamespace(ctx, releaseNS, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := helm(t, kube, "install", releaseName, ".", "--namespace", releaseNS, "--set", "replicas=1"); err != nil {
		t.Fatal(err)
	}
	// An older release's CRD: drop a property, as if the chart had gained it.
	crd := &unstructured.Unstructured{}
	crd.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "telemetrypolicies.leanmesh.io"}, crd); err != nil {
		t.Fatal(err)
	}
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	props, _, _ := unstructured.NestedMap(versions[0].(map[string]any), "schema", "openAPIV3Schema", "properties", "spec", "properties")
	var dropped string
	for k := range props {
		dropped = k
		break
	}
	unstructured.RemoveNestedField(versions[0].(map[string]any), "schema", "openAPIV3Schema", "properties", "spec", "properties", dropped)
	_ = unstructured.SetNestedSlice(crd.Object, versions, "spec", "versions")
	if err := env.Client.Update(ctx, crd); err != nil {
		t.Fatal(err)
	}
	// helm upgrade leaves it as it is...
	if _, err := helm(t, kube, "upgrade", releaseName, ".", "--namespace", releaseNS, "--set", "replicas=1"); err != nil {
		t.Fatal(err)
	}
	if hasSpecProperty(ctx, t, env.Client, dropped) {
		t.Fatalf("helm upgrade restored spec.%s: the docs' premise (Helm skips crds/ on upgrade) no longer holds", dropped)
	}
	// ...the documented step brings it up to date: server-side apply of the
	// chart's crds/, as `kubectl apply --server-side -f charts/leanmesh/crds/` does.
	files, _ := filepath.Glob("crds/*.yaml")
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range parseDocs(t, string(raw)) {
			o.SetManagedFields(nil)
			if err := env.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), client.FieldOwner("kubectl"), client.ForceOwnership); err != nil {
				t.Fatalf("server-side apply %s: %v", f, err)
			}
		}
	}
	if !hasSpecProperty(ctx, t, env.Client, dropped) {
		t.Errorf("after applying crds/, spec.%s is still missing", dropped)
	}
	if doc, err := os.ReadFile("../../docs/install.md"); err != nil || !strings.Contains(string(doc), "kubectl apply --server-side -f charts/leanmesh/crds/") {
		t.Errorf("docs/install.md does not give the CRD upgrade step this test checks")
	}
}

func hasSpecProperty(ctx context.Context, t *testing.T, c client.Client, name string) bool {
	t.Helper()
	crd := &unstructured.Unstructured{}
	crd.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
	if err := c.Get(ctx, client.ObjectKey{Name: "telemetrypolicies.leanmesh.io"}, crd); err != nil {
		t.Fatal(err)
	}
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	_, ok, _ := unstructured.NestedMap(versions[0].(map[string]any), "schema", "openAPIV3Schema", "properties", "spec", "properties", name)
	return ok
}

func getObj(ctx context.Context, c client.Client, apiVersion, kind, ns, name string) error {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	return c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, u)
}

func mustExist(ctx context.Context, t *testing.T, c client.Client, apiVersion, kind, ns, name string) {
	t.Helper()
	if err := getObj(ctx, c, apiVersion, kind, ns, name); err != nil {
		t.Errorf("%s %s/%s: %v", kind, ns, name, err)
	}
}

func mustNotExist(ctx context.Context, t *testing.T, c client.Client, apiVersion, kind, ns, name string) {
	t.Helper()
	if err := getObj(ctx, c, apiVersion, kind, ns, name); !apierrors.IsNotFound(err) {
		t.Errorf("%s %s/%s: want NotFound, got %v", kind, ns, name, err)
	}
}

func firstLines(s string, n int) string {
	l := strings.SplitN(s, "\n", n+1)
	if len(l) > n {
		l = l[:n]
	}
	return strings.Join(l, "\n")
}
