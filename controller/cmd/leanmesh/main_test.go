package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCompareExitCodes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := write("a", "# TYPE istio_requests_total counter\nistio_requests_total{reporter=\"source\"} 100\n")
	b := write("b", "# TYPE istio_requests_total counter\nistio_requests_total{reporter=\"source\"} 101\n")
	cases := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"-istio", a, "-leanmesh", a}, 0, "MATCH"},
		{[]string{"-istio", a, "-leanmesh", b}, 1, "MISMATCH"},
		{[]string{"-istio", a, "-leanmesh", b, "-tolerance", "0.02"}, 0, "MATCH"},
		{[]string{"-istio", a}, 2, ""},
		{[]string{"-istio", a, "-leanmesh", filepath.Join(dir, "missing")}, 2, ""},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		if code := runCompare(c.args, &out, &errb); code != c.code || !strings.Contains(out.String(), c.out) {
			t.Errorf("%v: code %d out %q err %q", c.args, code, out.String(), errb.String())
		}
	}
}

func TestRenderCheck(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if code := runRender([]string{"-out", dir, "-check"}, &out, &errb); code != 1 {
		t.Fatalf("check of an empty dir = %d, want 1", code)
	}
	if code := runRender([]string{"-out", dir}, &out, &errb); code != 0 {
		t.Fatalf("render = %d: %s", code, errb.String())
	}
	if code := runRender([]string{"-out", dir, "-check"}, &out, &errb); code != 0 {
		t.Fatalf("check after render = %d: %s", code, errb.String())
	}
	if code := runRender([]string{"-out", "../../../envoyfilters", "-check"}, &out, &errb); code != 0 {
		t.Fatalf("committed envoyfilters/ out of date: %s", errb.String())
	}
}
