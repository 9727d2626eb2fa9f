//go:build envoy1.36 || envoy1.37

package sdkfake

// SDKs before v1.38 have no StreamInfo.DrainConnectionUponCompletion or
// DownstreamSslConnection: the fake defines neither (sdk_since138.go does).
