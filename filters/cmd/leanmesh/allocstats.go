package main

/*
#include <stdint.h>
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// goAllocStats writes the Go heap's cumulative allocation count and bytes
// (runtime.MemStats Mallocs, TotalAlloc) to out[0] and out[1]. Envoy never
// calls it: the test host does, before and after a benchmark, to report Go
// allocations per request through the real ABI (make bench-dataplane). It
// stops the world once per call, so it is not for a hot path.
//
//export goAllocStats
func goAllocStats(out *C.uint64_t) {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	o := unsafe.Slice((*uint64)(unsafe.Pointer(out)), 2)
	o[0], o[1] = m.Mallocs, m.TotalAlloc
}
