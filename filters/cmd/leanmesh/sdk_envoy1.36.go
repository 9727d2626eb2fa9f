//go:build envoy1.36

package main

// sdkMinor: Istio's proxy release whose Envoy is 1.36.x (see envoy-build/versions.tsv).
const sdkMinor = "v1.36"
