package envoybuild

import (
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Expect is what a library built for one matrix row must satisfy.
type Expect struct {
	// MaxGlibc is the proxy image's glibc: no GLIBC_x symbol version may be newer.
	MaxGlibc string
	// Exports are the entry points Envoy dlsyms; Envoy rejects the library
	// ("golang_filter: load library failed") when any is missing.
	Exports []string
	// Imports are host functions the library must leave undefined for Envoy
	// to provide (proves it was linked as an Envoy Go extension).
	Imports []string
	// SDK and BuildTag, when set, must match the build info.
	SDK, BuildTag string
}

// Report is what CheckLibrary found.
type Report struct {
	Libs      []string
	MaxGlibc  string // highest GLIBC_ symbol version needed
	SDK       string // github.com/envoyproxy/envoy version in the build info
	BuildTags string
	Size      int64
	Problems  []string
}

// FallbackExports is the set Envoy's dso.cc (HttpFilterDsoImpl and
// NetworkFilterDsoImpl, identical in v1.36.2 through v1.39.1) loads; used when
// the SDK sources are not in the module cache.
var FallbackExports = []string{
	"envoyGoFilterNewHttpPluginConfig", "envoyGoFilterMergeHttpPluginConfig", "envoyGoFilterDestroyHttpPluginConfig",
	"envoyGoFilterOnHttpHeader", "envoyGoFilterOnHttpData", "envoyGoFilterOnHttpLog", "envoyGoFilterOnHttpStreamComplete",
	"envoyGoFilterOnHttpDestroy", "envoyGoRequestSemaDec", "envoyGoFilterCleanUp",
	"envoyGoFilterOnNetworkFilterConfig", "envoyGoFilterOnDownstreamConnection", "envoyGoFilterOnDownstreamData",
	"envoyGoFilterOnDownstreamEvent", "envoyGoFilterOnDownstreamWrite", "envoyGoFilterOnUpstreamConnectionReady",
	"envoyGoFilterOnUpstreamConnectionFailure", "envoyGoFilterOnUpstreamData", "envoyGoFilterOnUpstreamEvent",
	"envoyGoFilterOnSemaDec",
}

// DefaultImports are host functions every leanmesh build calls.
var DefaultImports = []string{"envoyGoFilterHttpGetHeader", "envoyGoFilterHttpSetHeaderHelper", "envoyGoFilterHttpGetStringProperty", "envoyGoFilterLog"}

var dsoSymbol = regexp.MustCompile(`"(envoyGo\w+)"`)

// RequiredExports reads the symbols Envoy's HTTP and network golang filters
// dlsym from contrib/golang/common/dso/dso.cc of an SDK module directory, so
// the check follows the row's SDK rather than a copied list.
func RequiredExports(sdkDir string) ([]string, error) {
	src, err := os.ReadFile(filepath.Join(sdkDir, "contrib/golang/common/dso/dso.cc"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ctor := range []string{"HttpFilterDsoImpl::HttpFilterDsoImpl(", "NetworkFilterDsoImpl::NetworkFilterDsoImpl("} {
		i := strings.Index(string(src), ctor)
		if i < 0 {
			return nil, fmt.Errorf("dso.cc: no %s", ctor)
		}
		body := string(src[i:])
		if j := strings.Index(body, "\n}\n"); j >= 0 {
			body = body[:j]
		}
		for _, m := range dsoSymbol.FindAllStringSubmatch(body, -1) {
			out = append(out, m[1])
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("dso.cc: no symbols found")
	}
	return out, nil
}

// CheckLibrary inspects a built leanmesh.so: exported entry points, imported
// host functions, linked libraries (only libc), glibc symbol versions and,
// when asked, the SDK version and build tag recorded in its build info.
func CheckLibrary(path string, want Expect) (*Report, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	rep := &Report{Size: st.Size(), MaxGlibc: "0"}
	syms, err := f.DynamicSymbols()
	if err != nil {
		return nil, err
	}
	defined, undefined := map[string]bool{}, map[string]bool{}
	for _, s := range syms {
		if s.Section == elf.SHN_UNDEF {
			undefined[s.Name] = true
			if v, ok := strings.CutPrefix(s.Version, "GLIBC_"); ok && VersionLess(rep.MaxGlibc, v) {
				rep.MaxGlibc = v
			}
		} else {
			defined[s.Name] = true
		}
	}
	for _, name := range want.Exports {
		if !defined[name] {
			rep.Problems = append(rep.Problems, "entry point "+name+" not exported")
		}
	}
	for _, name := range want.Imports {
		if !undefined[name] {
			rep.Problems = append(rep.Problems, "host function "+name+" not imported")
		}
	}
	if rep.Libs, err = f.ImportedLibraries(); err != nil {
		return nil, err
	}
	sort.Strings(rep.Libs)
	for _, l := range rep.Libs {
		if l != "libc.so.6" {
			rep.Problems = append(rep.Problems, "links "+l+": only libc is allowed (the proxy image has nothing else we can rely on)")
		}
	}
	if want.MaxGlibc != "" && VersionLess(want.MaxGlibc, rep.MaxGlibc) {
		rep.Problems = append(rep.Problems, fmt.Sprintf("needs GLIBC_%s, the proxy image has %s: build on an older builder image", rep.MaxGlibc, want.MaxGlibc))
	}
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		if want.SDK != "" || want.BuildTag != "" {
			rep.Problems = append(rep.Problems, "no Go build info: "+err.Error())
		}
		return rep, nil
	}
	for _, d := range bi.Deps {
		if d.Path == "github.com/envoyproxy/envoy" {
			rep.SDK = d.Version
		}
	}
	for _, s := range bi.Settings {
		if s.Key == "-tags" {
			rep.BuildTags = s.Value
		}
	}
	if want.SDK != "" && rep.SDK != want.SDK {
		rep.Problems = append(rep.Problems, fmt.Sprintf("built with SDK %q, the row needs %s", rep.SDK, want.SDK))
	}
	if want.BuildTag != "" && !hasTag(rep.BuildTags, want.BuildTag) {
		rep.Problems = append(rep.Problems, fmt.Sprintf("built with tags %q, the row needs %s", rep.BuildTags, want.BuildTag))
	}
	return rep, nil
}

func hasTag(tags, tag string) bool {
	for _, t := range strings.Split(tags, ",") {
		if t == tag {
			return true
		}
	}
	return false
}
