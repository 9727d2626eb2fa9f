package dataplane

import (
	"testing"

	envoybuild "github.com/leanmesh/leanmesh/envoy-build"
)

// The built leanmesh.so exports the entry points Envoy's golang filters
// dlsym, imports the host functions they provide, links only libc, and needs
// no glibc symbol version newer than the target proxyv2 image's glibc. The
// check itself lives in envoy-build, which also runs it on every library
// `make so-matrix` builds.
func TestSharedLibraryABI(t *testing.T) {
	artifacts(t)
	m, err := envoybuild.Load("../../envoy-build/versions.tsv")
	if err != nil {
		t.Fatal(err)
	}
	row := m.Default()
	rep, err := envoybuild.CheckLibrary(art.leanmesh, envoybuild.Expect{
		MaxGlibc: row.ProxyGlibc, Exports: envoybuild.FallbackExports, Imports: envoybuild.DefaultImports, SDK: row.SDK,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Problems {
		t.Error(p)
	}
	t.Logf("exports ok, links %v, highest GLIBC symbol version %s (proxy image: %s), SDK %s", rep.Libs, rep.MaxGlibc, row.ProxyGlibc, rep.SDK)
}
