//go:build !(envoy1.36 || envoy1.37)

package sdkfake

import "github.com/envoyproxy/envoy/contrib/golang/common/go/api"

// StreamInfo methods added in SDK v1.38.
func (i *streamInfo) DrainConnectionUponCompletion()             {}
func (i *streamInfo) DownstreamSslConnection() api.SslConnection { return nil }
