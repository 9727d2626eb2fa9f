package httpstats

import "github.com/envoyproxy/envoy/contrib/golang/common/go/api"

// Reader reads what the filter needs from Envoy. The SDK's own read calls
// allocate on every call: their C out-parameters escape to the heap, and
// every string answer of a stream-info or property read is cloned. The .so's
// main installs a reader that calls the same C functions of Envoy's golang
// filter (contrib/golang/filters/http/source/cgo.cc) without either, after
// checking the SDK's layout (filters/cmd/leanmesh/reads.go); SDKReader is the
// portable fallback the unit tests use.
//
// Borrowed answers: a ClusterName or Property string points into Envoy's
// per-request scratch string (Filter::getStringValue and
// Filter::getStringPropertyCommon assign req_->strValue), so the next string
// read on the same request overwrites it; a Header string points into the
// header map; Headers answers point into a per-thread buffer that the next
// Headers call on the thread reuses. Copy what must outlive that.
type Reader interface {
	// Header is h.GetRaw(key).
	Header(h api.HeaderMap, key string) string
	// Headers returns all of h's headers as key, value, key, value... in
	// Envoy's iteration order, in one C call (envoyGoFilterHttpCopyHeaders or
	// ...CopyTrailers), or false when the reader cannot (then use Header). It
	// must run before the filter changes h in the same callback: Envoy
	// copies into buffers sized by the counts it passed to the callback.
	Headers(h api.HeaderMap) ([]string, bool)
	// ResponseCode is StreamInfo().ResponseCode().
	ResponseCode(cb api.FilterCallbackHandler) (uint32, bool)
	// ClusterName is StreamInfo().UpstreamClusterName(), borrowed.
	ClusterName(cb api.FilterCallbackHandler) (string, bool)
	// Property is GetProperty(path), borrowed.
	Property(cb api.FilterCallbackHandler, path string) (string, error)
	// Bytes is b.Bytes(), borrowed: a per-thread buffer the next Bytes call
	// on the thread reuses (the SDK allocates a new slice per frame).
	Bytes(b api.BufferInstance) []byte
}

// SDKReader reads through the SDK's methods: owned answers, allocations.
type SDKReader struct{}

func (SDKReader) Header(h api.HeaderMap, key string) string { return h.GetRaw(key) }
func (SDKReader) Headers(api.HeaderMap) ([]string, bool)    { return nil, false }
func (SDKReader) ResponseCode(cb api.FilterCallbackHandler) (uint32, bool) {
	return cb.StreamInfo().ResponseCode()
}
func (SDKReader) ClusterName(cb api.FilterCallbackHandler) (string, bool) {
	return cb.StreamInfo().UpstreamClusterName()
}
func (SDKReader) Property(cb api.FilterCallbackHandler, path string) (string, error) {
	return cb.GetProperty(path)
}

func (SDKReader) Bytes(b api.BufferInstance) []byte { return b.Bytes() }

// Reads is the reader in use; set once at init, before any request.
var Reads Reader = SDKReader{}

// headerValue returns the first value of key in a Headers answer, as
// Envoy's HeaderMap::get(key)[0] (Filter::getHeader) would: both walk the
// map in insertion order. Keys in Envoy's maps are lower case.
func headerValue(kv []string, key string) (string, bool) {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i] == key {
			return kv[i+1], true
		}
	}
	return "", false
}

// headerReader answers single-header reads from one copy of a map when the
// reader can copy, else with one read per header.
type headerReader struct {
	h      api.HeaderMap
	kv     []string
	copied bool
}

func readHeaders(h api.HeaderMap) headerReader {
	kv, ok := Reads.Headers(h)
	return headerReader{h: h, kv: kv, copied: ok}
}

func (r *headerReader) get(key string) string {
	if r.copied {
		v, _ := headerValue(r.kv, key)
		return v
	}
	return Reads.Header(r.h, key)
}

// isGRPCRequest is Envoy's Grpc::Common::isGrpcRequestHeaders, which Istio's
// stats filter applies in decodeHeaders: a :path, and a content-type of
// exactly "application/grpc" or starting with "application/grpc+"
// (hasGrpcContentType, source/common/grpc/common.cc: application/grpc-web is
// not gRPC).
func isGRPCRequest(r *headerReader) bool {
	const grpc = "application/grpc"
	ct := r.get("content-type")
	if len(ct) < len(grpc) || ct[:len(grpc)] != grpc || (len(ct) > len(grpc) && ct[len(grpc)] != '+') {
		return false
	}
	if r.copied {
		_, ok := headerValue(r.kv, ":path")
		return ok
	}
	return Reads.Header(r.h, ":path") != ""
}
