//go:build !(envoy1.36 || envoy1.37)

package main

import "github.com/envoyproxy/envoy/contrib/golang/common/go/api"

// Fails to compile on SDKs before v1.38 (no such method), so an envoy1.38,
// envoy1.39 or untagged build cannot pick up an older SDK by accident.
var _ = api.StreamInfo.DownstreamSslConnection
