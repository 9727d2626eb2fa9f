package main

/*
#cgo linux LDFLAGS: -Wl,-unresolved-symbols=ignore-all
#cgo darwin LDFLAGS: -Wl,-undefined,dynamic_lookup

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// Envoy's golang filter C API (contrib/golang/common/go/api/api.h; the same
// signatures in v1.36 to v1.39). CAPIStatus is an int-sized enum: CAPIOK = 0,
// CAPIValueNotFound = -5, CAPIYield = -6.
int envoyGoFilterHttpGetHeader(void* s, void* key_data, int key_len, uint64_t* value_data, int* value_len);
int envoyGoFilterHttpCopyHeaders(void* s, void* strs, void* buf);
int envoyGoFilterHttpCopyTrailers(void* s, void* strs, void* buf);
int envoyGoFilterHttpGetStringValue(void* r, int id, uint64_t* value_data, int* value_len);
int envoyGoFilterHttpGetIntegerValue(void* r, int id, uint64_t* value);
int envoyGoFilterHttpGetStringProperty(void* r, void* key_data, int key_len, uint64_t* value_data, int* value_len, int* rc);
int envoyGoFilterHttpGetBuffer(void* s, uint64_t buffer, void* value);

// Answers come back by value, so no Go variable's address crosses into C
// (the SDK's out-parameters escape to the Go heap: one allocation per call).
typedef struct { int status; int len; const char* data; } lm_str;
typedef struct { int status; uint64_t value; } lm_int;
typedef struct { int status; void* strs; } lm_kv;

static lm_str lm_get_header(void* s, void* key, int key_len) {
	lm_str r = {0, 0, NULL};
	uint64_t data = 0;
	r.status = envoyGoFilterHttpGetHeader(s, key, key_len, &data, &r.len);
	r.data = (const char*)(uintptr_t)data;
	return r;
}

static lm_str lm_get_string_value(void* req, int id) {
	lm_str r = {0, 0, NULL};
	uint64_t data = 0;
	r.status = envoyGoFilterHttpGetStringValue(req, id, &data, &r.len);
	r.data = (const char*)(uintptr_t)data;
	return r;
}

static lm_int lm_get_integer_value(void* req, int id) {
	lm_int r = {0, 0};
	r.status = envoyGoFilterHttpGetIntegerValue(req, id, &r.value);
	return r;
}

// Property reads may answer CAPIYield off the worker thread and write the
// answer later (Filter::getStringProperty posts to the dispatcher), so their
// out-parameters live in per-thread storage, never on a stack. leanmesh reads
// only inside Envoy's callbacks, on the worker thread, where Envoy answers
// inline; a yield is reported and the caller falls back to the SDK.
static __thread __attribute__((tls_model("initial-exec"))) uint64_t lm_prop_data;
static __thread __attribute__((tls_model("initial-exec"))) int lm_prop_len, lm_prop_rc;

static lm_str lm_get_property(void* req, void* key, int key_len) {
	lm_str r = {0, 0, NULL};
	r.status = envoyGoFilterHttpGetStringProperty(req, key, key_len, &lm_prop_data, &lm_prop_len, &lm_prop_rc);
	if (r.status == 0) {
		r.data = (const char*)(uintptr_t)lm_prop_data;
		r.len = lm_prop_len;
	}
	return r;
}

// Header copies go to per-thread buffers reused by the next copy on the
// thread. strs holds 2*num GoStrings {const char* p; ptrdiff_t n}, the layout
// of a Go string, which Envoy's copyHeaderMapToGo fills with pointers into buf.
static __thread __attribute__((tls_model("initial-exec"))) char* lm_buf;
static __thread __attribute__((tls_model("initial-exec"))) size_t lm_buf_cap;
static __thread __attribute__((tls_model("initial-exec"))) char* lm_strs;
static __thread __attribute__((tls_model("initial-exec"))) size_t lm_strs_cap;

static int lm_reserve(char** p, size_t* cap, size_t need) {
	if (need == 0) need = 1;
	// Give back a buffer a huge header map grew, once maps are small again.
	if (*cap >= need && !(*cap > (1u << 20) && need < (64u << 10))) return 1;
	free(*p);
	*p = malloc(need);
	*cap = *p ? need : 0;
	return *p != NULL;
}

// A data frame's bytes, copied into a per-thread buffer (Filter::copyBuffer
// writes the whole buffer, whose length the callback was given).
static __thread __attribute__((tls_model("initial-exec"))) char* lm_body;
static __thread __attribute__((tls_model("initial-exec"))) size_t lm_body_cap;

static lm_kv lm_get_buffer(void* s, uint64_t buffer, uint64_t len) {
	lm_kv r = {-7, NULL};
	if (!lm_reserve(&lm_body, &lm_body_cap, (size_t)len)) return r;
	r.status = envoyGoFilterHttpGetBuffer(s, buffer, lm_body);
	r.strs = lm_body;
	return r;
}

static lm_kv lm_copy(void* s, uint64_t num, uint64_t bytes, int trailers) {
	lm_kv r = {-7, NULL};  // CAPIInternalFailure
	size_t ns = (size_t)num * 2 * 16;
	if (!lm_reserve(&lm_strs, &lm_strs_cap, ns) || !lm_reserve(&lm_buf, &lm_buf_cap, (size_t)bytes)) return r;
	memset(lm_strs, 0, ns); // an empty value's pointer is left unset by Envoy
	r.status = trailers ? envoyGoFilterHttpCopyTrailers(s, lm_strs, lm_buf) : envoyGoFilterHttpCopyHeaders(s, lm_strs, lm_buf);
	r.strs = lm_strs;
	return r;
}
*/
import "C"

import (
	"reflect"
	"sync"
	"unsafe"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"

	"github.com/leanmesh/leanmesh/filters/httpstats"
)

// Value ids of envoyGoFilterHttpGetStringValue/GetIntegerValue (the SDK's
// pkg/http capi_impl.go, Envoy's EnvoyValue enum).
const (
	valueResponseCode        = 4
	valueUpstreamClusterName = 11
)

// directReader implements httpstats.Reader with the C calls above. It needs
// the C pointers the SDK keeps: httpRequest.req (*C.httpRequest) behind the
// filter callbacks, and processState.processState (*C.processState) behind a
// header map's state. Both are found once per type by name and offset; any
// other layout falls back to the SDK's calls.
type directReader struct{}

var sdkReader httpstats.SDKReader

// cbLayout: the callbacks' dynamic type is *httpRequest with req first.
type cbLayout struct{ ok bool }

var cbLayouts sync.Map // reflect.Type -> cbLayout

func requestOf(cb api.FilterCallbackHandler) unsafe.Pointer {
	t := reflect.TypeOf(cb)
	v, seen := cbLayouts.Load(t)
	if !seen {
		v = checkRequestLayout(t)
		cbLayouts.Store(t, v)
	}
	if !v.(cbLayout).ok {
		return nil
	}
	data := (*[2]unsafe.Pointer)(unsafe.Pointer(&cb))[1]
	if data == nil {
		return nil
	}
	return *(*unsafe.Pointer)(data) // httpRequest.req
}

func checkRequestLayout(t reflect.Type) cbLayout {
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct ||
		t.Elem().PkgPath() != sdkPkg || t.Elem().Name() != "httpRequest" {
		return cbLayout{}
	}
	s := t.Elem()
	if s.NumField() == 0 {
		return cbLayout{}
	}
	f := s.Field(0)
	return cbLayout{ok: f.Name == "req" && f.Offset == 0 && f.Type.Kind() == reflect.Pointer}
}

// cStateOf is the *C.processState behind a header map of a known layout.
func cStateOf(h api.HeaderMap) (unsafe.Pointer, layout) {
	l, data := layoutOf(h)
	if !l.ok || l.cStateOffset == 0 || data == nil {
		return nil, l
	}
	goState := *(*unsafe.Pointer)(data) // headerMapImpl.state
	if goState == nil {
		return nil, l
	}
	return *(*unsafe.Pointer)(unsafe.Add(goState, l.cStateOffset)), l
}

func (directReader) Header(h api.HeaderMap, key string) string {
	s, _ := cStateOf(h)
	if s == nil {
		return sdkReader.Header(h, key)
	}
	r := C.lm_get_header(s, unsafe.Pointer(unsafe.StringData(key)), C.int(len(key)))
	if r.status != 0 {
		// A state error: the SDK's call panics with its message (recovered
		// by the callback's panicsafe), as it would have.
		return sdkReader.Header(h, key)
	}
	return unsafe.String((*byte)(unsafe.Pointer(r.data)), int(r.len))
}

func (directReader) Headers(h api.HeaderMap) ([]string, bool) {
	s, l := cStateOf(h)
	if s == nil || l.numOffset == 0 || l.bytesOffset == 0 {
		return nil, false
	}
	data := (*[2]unsafe.Pointer)(unsafe.Pointer(&h))[1]
	num := *(*uint64)(unsafe.Add(data, l.numOffset))
	bytes := *(*uint64)(unsafe.Add(data, l.bytesOffset))
	trailers := C.int(0)
	if !l.writable {
		trailers = 1
	}
	r := C.lm_copy(s, C.uint64_t(num), C.uint64_t(bytes), trailers)
	if r.status != 0 || num == 0 {
		return nil, r.status == 0
	}
	return unsafe.Slice((*string)(r.strs), 2*num), true
}

func (directReader) ResponseCode(cb api.FilterCallbackHandler) (uint32, bool) {
	req := requestOf(cb)
	if req == nil {
		return sdkReader.ResponseCode(cb)
	}
	r := C.lm_get_integer_value(req, valueResponseCode)
	switch r.status {
	case 0:
		return uint32(r.value), true
	case -5: // CAPIValueNotFound
		return 0, false
	}
	return sdkReader.ResponseCode(cb)
}

func (directReader) ClusterName(cb api.FilterCallbackHandler) (string, bool) {
	req := requestOf(cb)
	if req == nil {
		return sdkReader.ClusterName(cb)
	}
	r := C.lm_get_string_value(req, valueUpstreamClusterName)
	switch r.status {
	case 0:
		return unsafe.String((*byte)(unsafe.Pointer(r.data)), int(r.len)), true
	case -5:
		return "", false
	}
	return sdkReader.ClusterName(cb)
}

func (directReader) Property(cb api.FilterCallbackHandler, path string) (string, error) {
	req := requestOf(cb)
	if req == nil {
		return sdkReader.Property(cb, path)
	}
	r := C.lm_get_property(req, unsafe.Pointer(unsafe.StringData(path)), C.int(len(path)))
	switch r.status {
	case 0:
		return unsafe.String((*byte)(unsafe.Pointer(r.data)), int(r.len)), nil
	case -5:
		return "", api.ErrValueNotFound
	case -7:
		return "", api.ErrInternalFailure
	case -8:
		return "", api.ErrSerializationFailure
	}
	// A yield or a state error: the SDK's call answers (or panics, recovered
	// by the callback's panicsafe) exactly as before.
	return sdkReader.Property(cb, path)
}

// bufLayout: the SDK's httpBuffer{state *processState; envoyBufferInstance,
// length uint64}.
type bufLayout struct {
	ok                    bool
	instOffset, lenOffset uintptr
	cStateOffset          uintptr
}

var bufLayouts sync.Map // reflect.Type -> bufLayout

func checkBufferLayout(t reflect.Type) bufLayout {
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct ||
		t.Elem().PkgPath() != sdkPkg || t.Elem().Name() != "httpBuffer" {
		return bufLayout{}
	}
	s := t.Elem()
	st, ok1 := s.FieldByName("state")
	inst, ok2 := s.FieldByName("envoyBufferInstance")
	n, ok3 := s.FieldByName("length")
	if !ok1 || !ok2 || !ok3 || st.Offset != 0 || st.Type.Kind() != reflect.Pointer ||
		inst.Type.Kind() != reflect.Uint64 || n.Type.Kind() != reflect.Uint64 {
		return bufLayout{}
	}
	l := bufLayout{ok: true, instOffset: inst.Offset, lenOffset: n.Offset}
	if ps := st.Type.Elem(); ps.Kind() == reflect.Struct && ps.Name() == "processState" && ps.PkgPath() == sdkPkg {
		if f, found := ps.FieldByName("processState"); found && f.Type.Kind() == reflect.Pointer && f.Offset != 0 {
			l.cStateOffset = f.Offset
		}
	}
	l.ok = l.cStateOffset != 0
	return l
}

func (directReader) Bytes(b api.BufferInstance) []byte {
	t := reflect.TypeOf(b)
	v, seen := bufLayouts.Load(t)
	if !seen {
		v = checkBufferLayout(t)
		bufLayouts.Store(t, v)
	}
	l := v.(bufLayout)
	data := (*[2]unsafe.Pointer)(unsafe.Pointer(&b))[1]
	if !l.ok || data == nil {
		return b.Bytes()
	}
	n := *(*uint64)(unsafe.Add(data, l.lenOffset))
	goState := *(*unsafe.Pointer)(data)
	if n == 0 || goState == nil {
		return b.Bytes()
	}
	cState := *(*unsafe.Pointer)(unsafe.Add(goState, l.cStateOffset))
	r := C.lm_get_buffer(cState, C.uint64_t(*(*uint64)(unsafe.Add(data, l.instOffset))), C.uint64_t(n))
	if r.status != 0 {
		return b.Bytes() // the SDK's call panics with its message, as before
	}
	return unsafe.Slice((*byte)(r.strs), n)
}
