package manifests

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/leanmesh/leanmesh/controller/release"
)

// TestCommittedManifestsMatch fails when envoyfilters/ drifts from what the
// renderer produces. Fix with: go run ./controller/cmd/leanmesh render --out envoyfilters
func TestCommittedManifestsMatch(t *testing.T) {
	files, err := Files(release.Embedded(), "")
	if err != nil {
		t.Fatal(err)
	}
	root := "../../envoyfilters"
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Errorf("%s: %v (run make manifests)", name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("envoyfilters/%s differs from the renderer (run make manifests)", name)
		}
	}
	// Stale files of a removed set or object.
	var stale []string
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(p) != ".yaml" {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if _, ok := files[filepath.ToSlash(rel)]; !ok {
			stale = append(stale, rel)
		}
		return nil
	})
	sort.Strings(stale)
	if len(stale) > 0 {
		t.Errorf("files no longer rendered: %v (delete them or run make manifests)", stale)
	}
}

func TestSetsSelectDisjointPods(t *testing.T) {
	files, err := Files(release.Embedded(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"leanmesh/envoyfilter-http.yaml", "shadow/envoyfilter-http.yaml", "exposition/envoyfilter-exposition.yaml"} {
		if _, ok := files[want]; !ok {
			t.Errorf("missing %s", want)
		}
	}
	for _, mode := range []string{"leanmesh", "shadow"} {
		// LeanMesh removes istio.stats from HTTP connection managers only;
		// a Telemetry would also switch off Istio's TCP stats.
		if _, ok := files[mode+"/telemetry.yaml"]; ok {
			t.Errorf("%s: no Telemetry expected", mode)
		}
	}
	// One scrape listener per pod, whatever its mode label: only the
	// exposition set adds it, and it selects on the library label alone.
	for name, b := range files {
		if has := bytes.Contains(b, []byte("leanmesh-prometheus")); has != (name == "exposition/envoyfilter-exposition.yaml") {
			t.Errorf("%s: scrape listener present = %v", name, has)
		}
	}
	if b := files["exposition/envoyfilter-exposition.yaml"]; bytes.Contains(b, []byte("leanmesh.io/telemetry")) || !bytes.Contains(b, []byte("leanmesh.io/envoy-version:")) {
		t.Errorf("the exposition must select every pod with the library:\n%s", b)
	}
	if !bytes.Contains(files["shadow/envoyfilter-http.yaml"], []byte("leanmesh.io/telemetry: shadow")) ||
		!bytes.Contains(files["leanmesh/envoyfilter-http.yaml"], []byte("leanmesh.io/telemetry: leanmesh")) {
		t.Error("sets must select on their own mode label")
	}
}
