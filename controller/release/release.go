// Package release reads leanmesh's version matrix (envoy-build/versions.tsv):
// which Envoy runs inside each supported Istio release. The controller uses
// it for the pod label a proxy must carry (leanmesh.io/envoy-version) and the
// proxyVersion match of rendered patches, so versions are never hard-coded.
package release

import (
	"bufio"
	_ "embed"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// versionsTSV is a copy of envoy-build/versions.tsv (go:embed cannot reach
// outside the package); TestEmbeddedMatchesRepo fails when the copies drift
// and `make generate` refreshes it.
//
//go:embed versions.tsv
var versionsTSV string

// Release is one row of the matrix.
type Release struct {
	Istio     string // e.g. 1.31.1
	Envoy     string // e.g. 1.39.1, the value of leanmesh.io/envoy-version
	SDKModule string // Envoy Go SDK module version the .so is built with
	BuildTag  string
	Default   bool
}

// Minor is the Istio major.minor, e.g. "1.31".
func (r Release) Minor() string {
	parts := strings.SplitN(r.Istio, ".", 3)
	if len(parts) < 2 {
		return r.Istio
	}
	return parts[0] + "." + parts[1]
}

// ProxyVersionRegex matches the ISTIO_VERSION of any proxy of the release's
// minor: patch releases of one minor ship the same Envoy minor, and a proxy
// of another minor must never be told to load a library built for this one.
func (r Release) ProxyVersionRegex() string {
	return "^" + regexp.QuoteMeta(r.Minor()) + `(\..*)?$`
}

// Matrix is the parsed table, in file order.
type Matrix []Release

// Parse reads the whitespace-separated table; '#' starts a comment line.
func Parse(rd io.Reader) (Matrix, error) {
	var m Matrix
	sc := bufio.NewScanner(rd)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Fields(text)
		if len(f) < 9 {
			return nil, fmt.Errorf("versions.tsv line %d: want 9 columns, got %d", line, len(f))
		}
		m = append(m, Release{Istio: f[0], Envoy: f[1], SDKModule: f[2], BuildTag: f[3], Default: f[8] == "default"})
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

// Embedded is the matrix compiled into the binary.
func Embedded() Matrix {
	m, err := Parse(strings.NewReader(versionsTSV))
	if err != nil {
		panic("embedded versions.tsv: " + err.Error()) // caught by the package tests
	}
	return m
}

// Default is the row marked default.
func (m Matrix) Default() Release {
	for _, r := range m {
		if r.Default {
			return r
		}
	}
	return Release{}
}

// Find returns the row for an Istio release ("" means the default).
func (m Matrix) Find(istio string) (Release, error) {
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
	return Release{}, fmt.Errorf("istio release %q is not in the version matrix (known: %s)", istio, strings.Join(known, ", "))
}
