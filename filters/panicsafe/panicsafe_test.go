package panicsafe

import (
	"testing"

	"github.com/leanmesh/leanmesh/filters/internal/sdkfake"
	"github.com/leanmesh/leanmesh/filters/telemetry"
)

var log = sdkfake.InstallLog()

type status int

func callback(p bool, then func()) (st status) {
	defer Recover("panicsafe.test", &st, status(2), then)
	if p {
		panic("boom")
	}
	return 1
}

func TestRecover(t *testing.T) {
	c := telemetry.Self.Counter("leanmesh_panics_total", "callback", "panicsafe.test")
	before := c.Load()
	if got := callback(false, nil); got != 1 {
		t.Fatalf("no panic: status %d, want 1", got)
	}
	ran := 0
	for i := 0; i < 3; i++ {
		if got := callback(true, func() { ran++ }); got != 2 {
			t.Fatalf("panic: status %d, want the fallback 2", got)
		}
	}
	if c.Load() != before+3 || ran != 3 {
		t.Fatalf("counted %d, then ran %d; want 3 and 3", c.Load()-before, ran)
	}
	if n := log.Count("recovered panic in panicsafe.test"); n != 1 {
		t.Fatalf("logged %d times, want once", n)
	}
}

func TestRecoverNilStatus(t *testing.T) {
	func() {
		defer Recover[status]("panicsafe.nil", nil, 0, nil)
		panic("boom")
	}()
}

func TestNoAllocationWithoutPanic(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { callback(false, nil) }); n != 0 {
		t.Fatalf("%v allocations per call without a panic", n)
	}
}
