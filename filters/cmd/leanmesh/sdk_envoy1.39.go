//go:build envoy1.39 || !(envoy1.36 || envoy1.37 || envoy1.38)

package main

// sdkMinor: the newest supported SDK, also what an untagged `make build` uses
// (the default row of envoy-build/versions.tsv, pinned in go.mod).
const sdkMinor = "v1.39"
