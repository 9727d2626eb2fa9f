//go:build envoy1.37

package main

// sdkMinor: Istio's proxy release whose Envoy is 1.37.x (see envoy-build/versions.tsv).
const sdkMinor = "v1.37"
