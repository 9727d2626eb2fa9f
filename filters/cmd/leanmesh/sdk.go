package main

import (
	"runtime/debug"
	"strings"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
)

// The library must be built with the Envoy Go SDK of the exact Envoy that
// loads it (envoy-build/versions.tsv). Each sdk_envoy1.N.go file, selected by
// the row's build tag (the untagged default is the newest), names the SDK
// minor its code was written against; sdk_pre138.go / sdk_since138.go make a
// tag built against an SDK on the wrong side of the v1.38 API change fail to
// compile. The minors whose API is identical (1.36/1.37, 1.38/1.39) cannot
// be told apart at compile time, so init reports a mismatch in the proxy log.
func init() {
	if v := linkedSDK(); v != "" && !strings.HasPrefix(v, sdkMinor+".") {
		api.LogErrorf("leanmesh: built for Envoy SDK %s.x (build tag) but linked against %s; rebuild with the matching row of envoy-build/versions.tsv", sdkMinor, v)
	}
}

// linkedSDK is the github.com/envoyproxy/envoy version in the build info.
func linkedSDK() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, d := range bi.Deps {
		if d.Path == "github.com/envoyproxy/envoy" {
			if d.Replace != nil {
				return d.Replace.Version
			}
			return d.Version
		}
	}
	return ""
}
