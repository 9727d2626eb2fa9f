//go:build envoy1.38

package main

// sdkMinor: Istio's proxy release whose Envoy is 1.38.x (see envoy-build/versions.tsv).
const sdkMinor = "v1.38"
