package render

import (
	"strconv"
	"strings"
)

// firstNonDrainingEnvoy is the first Envoy release whose golang network
// filter leaves the read buffer to the next filter. None so far: every
// Envoy in envoy-build/versions.tsv (v1.36.2 .. v1.39.1) drains. When
// upstream ships a non-draining mode, set this to that release, make the
// renderer enable the mode, and prove it with e2e/envoyhost's read_forwarded
// counter (which mirrors golang.cc) before relying on it.
const firstNonDrainingEnvoy = ""

// GolangNetworkFilterDrainsReads reports whether Envoy version envoy
// ("1.39.1") drains every read buffer after a Go network filter's OnData.
// contrib/golang/filters/network/source/golang.cc, Filter::onData, right
// after envoyGoFilterOnDownstreamData:
//
//	// TODO: do not drain buffer by default
//	data.drain(data.length());
//
// config.cc adds the filter as a read+write filter, so leanmesh-tcp placed
// before tcp_proxy would swallow every byte the client sends and break the
// connection. Unknown or unparsable versions count as draining.
func GolangNetworkFilterDrainsReads(envoy string) bool {
	if firstNonDrainingEnvoy == "" {
		return true
	}
	v, ok := parseVersion(envoy)
	first, _ := parseVersion(firstNonDrainingEnvoy)
	if !ok {
		return true
	}
	for i := range v {
		if v[i] != first[i] {
			return v[i] < first[i]
		}
	}
	return false
}

func parseVersion(s string) ([3]int, bool) {
	var v [3]int
	parts := strings.Split(strings.TrimPrefix(s, "v"), ".")
	if len(parts) != 3 {
		return v, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return v, false
		}
		v[i] = n
	}
	return v, true
}
