package monitoring

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// notSeries are leanmesh_* strings in the code that are not series: the
// overflow label value, a listener stat prefix and local-reply details.
var notSeries = map[string]bool{
	"leanmesh_overflow": true, "leanmesh_prometheus": true, "leanmesh_exposition": true,
	"leanmesh_not_found": true, "leanmesh_exposition_panic": true,
}

var seriesName = regexp.MustCompile(`"(leanmesh_[a-z0-9_]+)"`)

// docs/metrics.md lists every leanmesh_* series the proxy and the controller
// define.
func TestMetricsReferenceIsComplete(t *testing.T) {
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, root := range []string{"../filters", "../controller"} {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for _, m := range seriesName.FindAllStringSubmatch(string(b), -1) {
				if notSeries[m[1]] {
					continue
				}
				found++
				if !strings.Contains(string(doc), "`"+m[1]+"`") {
					t.Errorf("%s defines %s, missing from docs/metrics.md", p, m[1])
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if found < 20 {
		t.Fatalf("found only %d series names in the code", found)
	}
}
