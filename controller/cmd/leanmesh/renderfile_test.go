package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRenderFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name, body string
		code       int
		out, err   string
	}{
		{"valid", "apiVersion: leanmesh.io/v1alpha1\nkind: TelemetryPolicy\nmetadata: {name: reviews, namespace: shop}\nspec:\n  selector: {matchLabels: {app: reviews}}\n",
			0, "name: leanmesh-reviews-http", ""},
		{"chain failure", "apiVersion: leanmesh.io/v1alpha1\nkind: TelemetryPolicy\nmetadata: {name: r, namespace: shop}\nspec: {istioRelease: 0.0.1}\n",
			1, "", "check IstioRelease: Ready=False reason=InvalidConfig"},
		{"unknown field", "apiVersion: leanmesh.io/v1alpha1\nkind: TelemetryPolicy\nmetadata: {name: r}\nspec: {modes: LeanMesh}\n",
			1, "", "unknown field"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := runRender([]string{"-f", write(c.name+".yaml", c.body)}, &out, &errb)
			if code != c.code || !strings.Contains(out.String(), c.out) || !strings.Contains(errb.String(), c.err) {
				t.Fatalf("code %d\nstdout %s\nstderr %s", code, out.String(), errb.String())
			}
		})
	}
}
