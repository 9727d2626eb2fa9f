// Package envoybuild owns leanmesh's version matrix (versions.tsv): the one
// place that maps an Istio release to its Envoy, the SDK the .so is built
// with, and the images and glibc versions of building and shipping. It is
// compiled into every binary that needs it (the controller reads it through
// controller/release) and checks built libraries against it.
package envoybuild

import (
	"bufio"
	_ "embed"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
)

//go:embed versions.tsv
var versionsTSV string

// Embedded is the matrix compiled into the binary.
func Embedded() Matrix {
	m, err := Parse(strings.NewReader(versionsTSV))
	if err != nil {
		panic("embedded versions.tsv: " + err.Error()) // caught by the package tests
	}
	return m
}

// Minor is the Istio major.minor, e.g. "1.31".
func (r Row) Minor() string { return minor(r.Istio) }

// ProxyVersionRegex matches the ISTIO_VERSION of any proxy of the release's
// minor: patch releases of one minor ship the same Envoy minor, and a proxy
// of another minor must never be told to load a library built for this one.
func (r Row) ProxyVersionRegex() string {
	return "^" + regexp.QuoteMeta(r.Minor()) + `(\..*)?$`
}

// Row is one line of versions.tsv.
type Row struct {
	Istio          string // e.g. 1.31.1
	Envoy          string // e.g. 1.39.1: the leanmesh.io/envoy-version label value
	SDK            string // Go module version of github.com/envoyproxy/envoy, e.g. v1.39.1
	BuildTag       string // e.g. envoy1.39
	GoBuilderImage string // e.g. golang:1.26-bookworm
	BuilderGlibc   string
	ProxyImage     string // stock istio/proxyv2 of the release
	ProxyGlibc     string
	Default        bool
}

// Matrix is the parsed table in file order.
type Matrix []Row

// Parse reads the whitespace-separated table; '#' starts a comment line.
func Parse(rd io.Reader) (Matrix, error) {
	var m Matrix
	sc := bufio.NewScanner(rd)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Fields(text)
		if len(f) != 9 {
			return nil, fmt.Errorf("versions.tsv line %d: want 9 columns, got %d", line, len(f))
		}
		r := Row{f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8] == "default"}
		if f[8] != "default" && f[8] != "-" {
			return nil, fmt.Errorf("versions.tsv line %d: last column must be default or -, got %q", line, f[8])
		}
		if r.SDK != "v"+r.Envoy {
			return nil, fmt.Errorf("versions.tsv line %d: sdk_module %s must be v<envoy> (v%s): the .so's SDK must equal the proxy's Envoy", line, r.SDK, r.Envoy)
		}
		if want := "envoy" + minor(r.Envoy); r.BuildTag != want {
			return nil, fmt.Errorf("versions.tsv line %d: build_tag %s, want %s", line, r.BuildTag, want)
		}
		if VersionLess(r.ProxyGlibc, r.BuilderGlibc) {
			return nil, fmt.Errorf("versions.tsv line %d: builder glibc %s is newer than the proxy's %s", line, r.BuilderGlibc, r.ProxyGlibc)
		}
		m = append(m, r)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	n := 0
	for _, r := range m {
		if r.Default {
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("versions.tsv: want exactly one default row, got %d", n)
	}
	return m, nil
}

// Load parses the file at path.
func Load(path string) (Matrix, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f)
}

// Default is the row marked default.
func (m Matrix) Default() Row {
	for _, r := range m {
		if r.Default {
			return r
		}
	}
	return Row{}
}

// Find returns the row of an Istio release; "" means the default row.
func (m Matrix) Find(istio string) (Row, error) {
	if istio == "" {
		return m.Default(), nil
	}
	var known []string
	for _, r := range m {
		if r.Istio == istio {
			return r, nil
		}
		known = append(known, r.Istio)
	}
	return Row{}, fmt.Errorf("istio release %q is not in the version matrix (known: %s)", istio, strings.Join(known, ", "))
}

func minor(v string) string {
	p := strings.SplitN(v, ".", 3)
	if len(p) < 2 {
		return v
	}
	return p[0] + "." + p[1]
}

// VersionLess compares dotted numeric versions ("2.34" < "2.39").
func VersionLess(a, b string) bool {
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
