package main

import (
	"os"
	"reflect"
	"sync"
	"unsafe"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	_ "github.com/envoyproxy/envoy/contrib/golang/filters/http/source/go/pkg/http" // cAPI below

	"github.com/leanmesh/leanmesh/filters/httpstats"
	"github.com/leanmesh/leanmesh/filters/telemetry"
)

// sdkCAPI is the SDK's C API implementation (pkg/http's cAPI). Calling its
// HttpSetHeader/HttpRemoveHeader with the header map's process state is what
// HeaderMap.Set/Del do after copying the whole map into Go; calling it
// directly skips that copy.
//
//go:linkname sdkCAPI github.com/envoyproxy/envoy/contrib/golang/filters/http/source/go/pkg/http.cAPI
var sdkCAPI api.HttpCAPI

// directHeaders writes through the C API when the header map is one of the
// SDK's own types with the layout this file was written against (v1.39:
// requestHeaderMapImpl{requestOrResponseHeaderMapImpl{headerMapImpl{state *processState, ...}}});
// anything else (another SDK version, a wrapper) falls back to Set/Del.
type directHeaders struct{}

var layoutOK sync.Map // reflect.Type -> bool

func stateOf(h api.HeaderMap) (unsafe.Pointer, bool) {
	t := reflect.TypeOf(h)
	ok, seen := layoutOK.Load(t)
	if !seen {
		ok = checkLayout(t)
		layoutOK.Store(t, ok)
	}
	if !ok.(bool) || sdkCAPI == nil {
		return nil, false
	}
	// The interface's data word points at the struct whose first word is
	// the state pointer (checked by checkLayout).
	data := (*[2]unsafe.Pointer)(unsafe.Pointer(&h))[1]
	state := *(*unsafe.Pointer)(data)
	return state, state != nil
}

func checkLayout(t reflect.Type) bool {
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return false
	}
	if t.Elem().PkgPath() != "github.com/envoyproxy/envoy/contrib/golang/filters/http/source/go/pkg/http" {
		return false
	}
	switch t.Elem().Name() {
	case "requestHeaderMapImpl", "responseHeaderMapImpl":
	default:
		return false
	}
	s := t.Elem()
	for _, name := range []string{"requestOrResponseHeaderMapImpl", "headerMapImpl"} {
		if s.NumField() == 0 || s.Field(0).Name != name || s.Field(0).Offset != 0 || s.Field(0).Type.Kind() != reflect.Struct {
			return false
		}
		s = s.Field(0).Type
	}
	f := s.Field(0)
	return f.Name == "state" && f.Offset == 0 && f.Type.Kind() == reflect.Pointer
}

// fallbacks counts writes that took the SDK's copying path, so a layout
// change after an SDK upgrade shows in the exposition instead of silently
// costing CPU.
var fallbacks = telemetry.Self.Counter("leanmesh_header_writer_fallback_total", "", "")

func (directHeaders) Set(h api.HeaderMap, key, value string) {
	if st, ok := stateOf(h); ok {
		sdkCAPI.HttpSetHeader(st, key, value, false)
		return
	}
	fallbacks.Add(1)
	h.Set(key, value)
}

func (directHeaders) Del(h api.HeaderMap, key string) {
	if st, ok := stateOf(h); ok {
		sdkCAPI.HttpRemoveHeader(st, key)
		return
	}
	fallbacks.Add(1)
	h.Del(key)
}

// LEANMESH_SDK_HEADERS=1 keeps the SDK's Set/Del: an escape hatch, and the
// comparator of BenchmarkDataPlane's "leanmesh-sdk-headers" variant.
func init() {
	if os.Getenv("LEANMESH_SDK_HEADERS") != "1" {
		httpstats.Headers = directHeaders{}
	}
}
