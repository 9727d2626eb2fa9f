//go:build envoy1.36 || envoy1.37

package main

import "github.com/envoyproxy/envoy/contrib/golang/common/go/api"

// SDKs before v1.38 have no StreamInfo.DrainConnectionUponCompletion (v1.38
// added it with DownstreamSslConnection and HttpCAPI.HttpSetDrainConnectionUponCompletion).
// Redeclaring it with another signature is a "duplicate method" compile error
// on v1.38+, so an envoy1.36/envoy1.37 build against a newer SDK cannot
// succeed. leanmesh uses none of those methods.
type sdkBefore138 interface {
	api.StreamInfo
	DrainConnectionUponCompletion(sdkBefore138)
}
