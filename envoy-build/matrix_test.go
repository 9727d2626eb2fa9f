package envoybuild

import (
	"regexp"
	"strings"
	"testing"
)

func TestEmbeddedMatrix(t *testing.T) {
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
}

func TestProxyVersionRegex(t *testing.T) {
	r := Row{Istio: "1.31.1"}
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
