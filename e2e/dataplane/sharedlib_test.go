package dataplane

import (
	"bufio"
	"debug/elf"
	"os"
	"strconv"
	"strings"
	"testing"
)

// The built leanmesh.so exports the entry points Envoy's golang filters
// dlsym, imports the host functions they provide, links only libc, and needs
// no glibc symbol version newer than the target proxyv2 image's glibc.
func TestSharedLibraryABI(t *testing.T) {
	artifacts(t)
	f, err := elf.Open(art.leanmesh)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.DynamicSymbols()
	if err != nil {
		t.Fatal(err)
	}
	defined, undefined := map[string]bool{}, map[string]bool{}
	maxGlibc := "0"
	for _, s := range syms {
		if s.Section == elf.SHN_UNDEF {
			undefined[s.Name] = true
			if v, ok := strings.CutPrefix(s.Version, "GLIBC_"); ok && versionLess(maxGlibc, v) {
				maxGlibc = v
			}
		} else {
			defined[s.Name] = true
		}
	}
	// contrib/golang/common/dso/libgolang.h (v1.39.1)
	for _, name := range []string{
		"envoyGoFilterNewHttpPluginConfig", "envoyGoFilterDestroyHttpPluginConfig", "envoyGoFilterMergeHttpPluginConfig",
		"envoyGoFilterOnHttpHeader", "envoyGoFilterOnHttpData", "envoyGoFilterOnHttpLog", "envoyGoFilterOnHttpStreamComplete",
		"envoyGoFilterOnHttpDestroy", "envoyGoRequestSemaDec", "envoyGoFilterCleanUp",
		"envoyGoFilterOnNetworkFilterConfig", "envoyGoFilterOnDownstreamConnection", "envoyGoFilterOnDownstreamData",
		"envoyGoFilterOnDownstreamEvent", "envoyGoFilterOnDownstreamWrite",
	} {
		if !defined[name] {
			t.Errorf("entry point %s not exported", name)
		}
	}
	for _, name := range []string{"envoyGoFilterHttpGetHeader", "envoyGoFilterHttpSetHeaderHelper", "envoyGoFilterHttpGetStringProperty", "envoyGoFilterLog"} {
		if !undefined[name] {
			t.Errorf("host function %s not imported", name)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range libs {
		if l != "libc.so.6" {
			t.Errorf("links %s: only libc is allowed", l)
		}
	}
	proxyGlibc := defaultRowColumn(t, 7)
	if versionLess(proxyGlibc, maxGlibc) {
		t.Errorf("needs GLIBC_%s, the target proxy image has %s", maxGlibc, proxyGlibc)
	}
	t.Logf("exports ok, links %v, highest GLIBC symbol version %s (proxy image: %s)", libs, maxGlibc, proxyGlibc)
}

// defaultRowColumn reads column col (0-based) of the default row of the
// version matrix.
func defaultRowColumn(t *testing.T, col int) string {
	f, err := os.Open("../../envoy-build/versions.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > col && !strings.HasPrefix(fields[0], "#") && fields[len(fields)-1] == "default" {
			return fields[col]
		}
	}
	t.Fatal("no default row in envoy-build/versions.tsv")
	return ""
}

func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}
