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
// anything else (another SDK version, a wrapper) falls back to Set/Del. It
// reads headerMapImpl.headerBytes (what Envoy passed for the map) the same
// way, for header and trailer maps.
type directHeaders struct{}

// layout is what checkLayout learned about a map type.
type layout struct {
	ok           bool    // a headerMapImpl at offset 0 with state first
	writable     bool    // a header (not trailer) map: Set/Del may use the state
	bytesOffset  uintptr // offset of headerMapImpl.headerBytes (uint64)
	numOffset    uintptr // offset of headerMapImpl.headerNum (uint64)
	cStateOffset uintptr // offset of processState.processState (*C.processState) in *state
}

const sdkPkg = "github.com/envoyproxy/envoy/contrib/golang/filters/http/source/go/pkg/http"

var layouts sync.Map // reflect.Type -> layout

func layoutOf(h api.HeaderMap) (layout, unsafe.Pointer) {
	t := reflect.TypeOf(h)
	v, seen := layouts.Load(t)
	if !seen {
		v = checkLayout(t)
		layouts.Store(t, v)
	}
	l := v.(layout)
	if !l.ok {
		return l, nil
	}
	// The interface's data word points at the struct that starts with the
	// headerMapImpl (checked by checkLayout).
	return l, (*[2]unsafe.Pointer)(unsafe.Pointer(&h))[1]
}

func stateOf(h api.HeaderMap) (unsafe.Pointer, bool) {
	l, data := layoutOf(h)
	if !l.ok || !l.writable || sdkCAPI == nil || data == nil {
		return nil, false
	}
	state := *(*unsafe.Pointer)(data)
	return state, state != nil
}

func checkLayout(t reflect.Type) layout {
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct || t.Elem().PkgPath() != sdkPkg {
		return layout{}
	}
	var l layout
	var wrappers []string
	switch t.Elem().Name() {
	case "requestHeaderMapImpl", "responseHeaderMapImpl":
		l.writable, wrappers = true, []string{"requestOrResponseHeaderMapImpl", "headerMapImpl"}
	case "requestTrailerMapImpl", "responseTrailerMapImpl":
		wrappers = []string{"requestOrResponseTrailerMapImpl", "headerMapImpl"}
	default:
		return layout{}
	}
	s := t.Elem()
	for _, name := range wrappers {
		if s.NumField() == 0 || s.Field(0).Name != name || s.Field(0).Offset != 0 || s.Field(0).Type.Kind() != reflect.Struct {
			return layout{}
		}
		s = s.Field(0).Type
	}
	if f := s.Field(0); f.Name != "state" || f.Offset != 0 || f.Type.Kind() != reflect.Pointer {
		return layout{}
	}
	l.ok = true
	if f, found := s.FieldByName("headerBytes"); found && f.Type.Kind() == reflect.Uint64 && len(f.Index) == 1 {
		l.bytesOffset = f.Offset
	}
	if f, found := s.FieldByName("headerNum"); found && f.Type.Kind() == reflect.Uint64 && len(f.Index) == 1 {
		l.numOffset = f.Offset
	}
	// state is *processState{request *httpRequest; processState *C.processState}.
	if st := s.Field(0).Type.Elem(); st.Kind() == reflect.Struct && st.Name() == "processState" && st.PkgPath() == sdkPkg {
		if f, found := st.FieldByName("processState"); found && f.Type.Kind() == reflect.Pointer && len(f.Index) == 1 && f.Offset != 0 {
			l.cStateOffset = f.Offset
		}
	}
	return l
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

// ByteSize reads headerMapImpl.headerBytes: Envoy's byteSize() of the map
// as handed to the callback (golang_filter.cc Filter::log for OnLog).
func (directHeaders) ByteSize(h api.HeaderMap) (uint64, bool) {
	l, data := layoutOf(h)
	if !l.ok || l.bytesOffset == 0 || data == nil {
		return 0, false
	}
	return *(*uint64)(unsafe.Add(data, l.bytesOffset)), true
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
// LEANMESH_SDK_READS=1 keeps the SDK's read calls (reads.go) the same way.
func init() {
	if os.Getenv("LEANMESH_SDK_HEADERS") != "1" {
		httpstats.Headers = directHeaders{}
	}
	if os.Getenv("LEANMESH_SDK_READS") != "1" {
		httpstats.Reads = directReader{}
	}
}
