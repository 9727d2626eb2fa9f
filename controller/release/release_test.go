package release

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

func TestEmbeddedMatchesRepo(t *testing.T) {
	repo, err := os.ReadFile("../../envoy-build/versions.tsv")
	if err != nil {
		t.Fatal(err)
	}
	if string(repo) != versionsTSV {
		t.Fatal("controller/release/versions.tsv differs from envoy-build/versions.tsv: run `make generate` (cp envoy-build/versions.tsv controller/release/)")
	}
}

func TestParse(t *testing.T) {
	m := Embedded()
	def := m.Default()
	if def.Istio == "" || def.Envoy == "" {
		t.Fatalf("no default row: %+v", m)
	}
	if got, err := m.Find(""); err != nil || got != def {
		t.Fatalf("Find(\"\") = %+v, %v", got, err)
	}
	if _, err := m.Find("0.0.1"); err == nil || !strings.Contains(err.Error(), def.Istio) {
		t.Fatalf("unknown release error should list known ones: %v", err)
	}
	cases := []struct {
		in   string
		want string
	}{
		{"# c\n1.31.1 1.39.1 v1.39.1 t img 2.36 px 2.39 default\n1.29.2 1.37.1 v1.37.1 t img 2.36 px 2.39 -\n", "1.31.1"},
		{"1.31.1 1.39.1\n", "error"},
		{"1.31.1 1.39.1 v1.39.1 t img 2.36 px 2.39 -\n", "error"},
	}
	for _, c := range cases {
		m, err := Parse(strings.NewReader(c.in))
		got := "error"
		if err == nil {
			got = m.Default().Istio
		}
		if got != c.want {
			t.Errorf("Parse(%q) default = %s (%v), want %s", c.in, got, err, c.want)
		}
	}
}

func TestProxyVersionRegex(t *testing.T) {
	r := Release{Istio: "1.31.1"}
	if got := r.ProxyVersionRegex(); got != `^1\.31(\..*)?$` {
		t.Fatalf("regex = %s", got)
	}
	re := regexp.MustCompile(r.ProxyVersionRegex())
	for v, want := range map[string]bool{"1.31": true, "1.31.0": true, "1.31.1-distroless": true, "1.310.0": false, "1.3.1": false, "11.31.0": false} {
		if re.MatchString(v) != want {
			t.Errorf("%s: match %v", v, !want)
		}
	}
}
