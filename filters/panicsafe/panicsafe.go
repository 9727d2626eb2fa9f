// Package panicsafe keeps a panic in a Go filter callback from killing the
// proxy: a panic that escapes a callback of the .so aborts Envoy. Every
// callback of leanmesh's filters defers Recover.
package panicsafe

import (
	"sync"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"

	"github.com/leanmesh/leanmesh/filters/telemetry"
)

var logged sync.Map

// Recover must be deferred directly by the callback (recover only works
// there):
//
//	defer panicsafe.Recover("DecodeHeaders", &status, api.Continue, nil)
//
// On a panic it counts leanmesh_panics_total{callback}, logs the first panic
// of each callback, sets *status (when not nil) to fallback so the stream or
// connection carries on, and runs then (when not nil), e.g. to answer a
// request. Without a panic it does nothing and allocates nothing.
func Recover[S any](callback string, status *S, fallback S, then func()) {
	r := recover()
	if r == nil {
		return
	}
	Count(callback, r)
	if status != nil {
		*status = fallback
	}
	if then != nil {
		then()
	}
}

// Count records a recovered panic r of callback: counted every time, logged
// once per callback so a panic per request cannot flood the log.
func Count(callback string, r interface{}) {
	telemetry.Self.Counter("leanmesh_panics_total", "callback", callback).Add(1)
	if _, dup := logged.LoadOrStore(callback, true); !dup {
		api.LogErrorf("leanmesh: recovered panic in %s: %v (logged once; see leanmesh_panics_total)", callback, r)
	}
}
