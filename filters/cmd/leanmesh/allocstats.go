package main

/*
#include <stdint.h>
*/
import "C"

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"unsafe"
)

// goAllocStats writes the Go heap's cumulative allocation count and bytes
// (runtime.MemStats Mallocs, TotalAlloc) to out[0] and out[1]. Envoy never
// calls it: the test host does, before and after a benchmark, to report Go
// allocations per request through the real ABI (make bench-dataplane). It
// stops the world once per call, so it is not for a hot path.
//
// With LEANMESH_ALLOC_PROFILE=<prefix> in the environment (tests only), every
// allocation is sampled (runtime.MemProfileRate = 1) and each call also
// writes the cumulative allocations by call stack to <prefix>.<n>, so two
// consecutive files attribute a benchmark's allocations to source lines
// (e2e/dataplane TestAllocationsAttributed).
//
//export goAllocStats
func goAllocStats(out *C.uint64_t) {
	if allocProfile != "" {
		writeAllocProfile()
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	o := unsafe.Slice((*uint64)(unsafe.Pointer(out)), 2)
	o[0], o[1] = m.Mallocs, m.TotalAlloc
}

var (
	allocProfile = os.Getenv("LEANMESH_ALLOC_PROFILE")
	allocSeq     atomic.Int32
)

func init() {
	if allocProfile != "" {
		runtime.MemProfileRate = 1
	}
}

// writeAllocProfile writes one line per allocation stack: objects, bytes, and
// the frames ("function file:line", innermost first) joined by " <- ".
func writeAllocProfile() {
	runtime.GC() // publishes the profile up to now (runtime.MemProfile's contract)
	var recs []runtime.MemProfileRecord
	n, _ := runtime.MemProfile(nil, true)
	for {
		recs = make([]runtime.MemProfileRecord, n+64)
		var ok bool
		if n, ok = runtime.MemProfile(recs, true); ok {
			recs = recs[:n]
			break
		}
	}
	f, err := os.Create(fmt.Sprintf("%s.%d", allocProfile, allocSeq.Add(1)))
	if err != nil {
		return
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	defer w.Flush()
	for _, r := range recs {
		var frames []string
		fs := runtime.CallersFrames(r.Stack())
		for {
			fr, more := fs.Next()
			frames = append(frames, fmt.Sprintf("%s %s:%d", fr.Function, fr.File, fr.Line))
			if !more {
				break
			}
		}
		fmt.Fprintf(w, "%d\t%d\t%s\n", r.AllocObjects, r.AllocBytes, strings.Join(frames, " <- "))
	}
}
