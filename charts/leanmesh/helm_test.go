// Package leanmesh holds the Helm chart's tests. They run the real helm CLI,
// built from helm.sh/helm/v3 and cached by version by the set-up script
// (e2e/cluster/build-binaries.sh helm), rather than linking Helm's Go engine:
// the CLI is exactly what users run (lint rules, values.schema.json
// validation, --set parsing, install ordering), and the project's go.mod
// stays free of Helm's Kubernetes pins.
package leanmesh

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const (
	releaseName = "leanmesh"
	releaseNS   = "leanmesh-system"
	setupScript = "../../e2e/cluster/build-binaries.sh"
)

// toolPaths builds helm (and fetches the monitoring CRDs) once per test
// binary and returns the script's `paths` output.
var toolPaths = sync.OnceValues(func() (map[string]string, error) {
	out, err := exec.Command("bash", setupScript, "helm", "monitoring-crds", "paths").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("%s helm: %v\n%s", setupScript, err, ee.Stderr)
		}
		return nil, err
	}
	paths := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			paths[k] = v
		}
	}
	return paths, nil
})

func toolPath(t testing.TB, name string) string {
	t.Helper()
	paths, err := toolPaths()
	if err != nil {
		t.Fatal(err)
	}
	if paths[name] == "" {
		t.Fatalf("set-up script prints no %s path", name)
	}
	return paths[name]
}

// helm runs the helm CLI in the chart directory with its own config dirs.
func helm(t testing.TB, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(toolPath(t, "HELM"), args...)
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"), "HELM_DATA_HOME="+filepath.Join(home, "data"))
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %v\n%s%s", strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	return stdout.String(), nil
}

// valueArgs turns a values file under testdata/values and --set-string pairs
// into helm flags.
func valueArgs(file string, sets map[string]string) []string {
	var args []string
	if file != "" {
		args = append(args, "-f", filepath.Join("testdata", "values", file))
	}
	keys := make([]string, 0, len(sets))
	for k := range sets {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "--set-string", k+"="+sets[k])
	}
	return args
}

// helmTemplate renders the chart as `helm template` does and parses every
// document.
func helmTemplate(t testing.TB, file string, sets map[string]string, extra ...string) ([]*unstructured.Unstructured, error) {
	t.Helper()
	args := append([]string{"template", releaseName, ".", "--namespace", releaseNS}, valueArgs(file, sets)...)
	out, err := helm(t, nil, append(args, extra...)...)
	if err != nil {
		return nil, err
	}
	return parseDocs(t, out), nil
}

func parseDocs(t testing.TB, out string) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(out), 4096)
	for {
		var m map[string]any
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("helm output is not YAML: %v\n%s", err, out)
		}
		if len(m) > 0 {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
	return objs
}

func mustTemplate(t testing.TB, file string, sets map[string]string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := helmTemplate(t, file, sets)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// isHook: Helm hooks (the uninstall Job and its RBAC) are checked by
// TestUninstallHook, not counted with the release's objects.
func isHook(o *unstructured.Unstructured) bool {
	_, ok := o.GetAnnotations()["helm.sh/hook"]
	return ok
}

func kindsOf(objs []*unstructured.Unstructured) string {
	var out []string
	for _, o := range objs {
		if !isHook(o) {
			out = append(out, o.GetKind())
		}
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

func readYAML(t testing.TB, path string) map[string]any {
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
