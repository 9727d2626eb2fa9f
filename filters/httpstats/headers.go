package httpstats

import "github.com/envoyproxy/envoy/contrib/golang/common/go/api"

// HeaderWriter adds and removes the metadata-exchange headers. The SDK's
// HeaderMap.Set/Del first copy the whole header map into Go (initHeaders),
// which costs more than everything else the filter does per request; the
// .so's main installs a writer that calls the C API directly when it can
// verify the SDK's layout (filters/cmd/leanmesh/headers.go). The filter never
// reads headers back through Get/Range, so skipping the Go-side copy is safe.
type HeaderWriter interface {
	Set(h api.HeaderMap, key, value string)
	Del(h api.HeaderMap, key string)
	// ByteSize is the map's byteSize as Envoy handed it to the SDK (the
	// SDK keeps it but has no method for it); false when unknown.
	ByteSize(h api.HeaderMap) (uint64, bool)
}

// SDKHeaders is the portable writer: the SDK's own methods.
type SDKHeaders struct{}

func (SDKHeaders) Set(h api.HeaderMap, key, value string) { h.Set(key, value) }
func (SDKHeaders) Del(h api.HeaderMap, key string)        { h.Del(key) }

// ByteSize: the SDK's API does not expose it.
func (SDKHeaders) ByteSize(api.HeaderMap) (uint64, bool) { return 0, false }

// Headers is the writer in use; set once at init, before any request.
var Headers HeaderWriter = SDKHeaders{}
