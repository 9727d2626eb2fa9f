package main

/*
#include <stdint.h>
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// goAllocStats is the same export as filters/cmd/leanmesh/allocstats.go, so
// that the test host reports this plugin's Go allocations per request too:
// out[0] = runtime.MemStats.Mallocs, out[1] = TotalAlloc.
//
//export goAllocStats
func goAllocStats(out *C.uint64_t) {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	o := unsafe.Slice((*uint64)(unsafe.Pointer(out)), 2)
	o[0], o[1] = m.Mallocs, m.TotalAlloc
}
