// Package soak holds what the soak tests (e2e/dataplane TestSoakProxy,
// e2e/hostile TestSoakMesh) share: how long they run and how often
// they report. `make soak SOAK=30m` sets LEANMESH_SOAK; without it
// TestSoakProxy skips and TestSoakMesh runs one short cycle (in make test).
package soak

import (
	"os"
	"testing"
	"time"
)

// Env names the variable that holds the soak duration (a Go duration).
const Env = "LEANMESH_SOAK"

// Duration is LEANMESH_SOAK; it skips the test when the variable is unset and
// fails it when the value is not a Go duration.
func Duration(t testing.TB) time.Duration {
	t.Helper()
	v := os.Getenv(Env)
	if v == "" {
		t.Skip("soak test: set " + Env + "=<duration> (make soak SOAK=30m)")
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", Env, v, err)
	}
	return d
}

// Interval is how often a soak of total length reports: about 30 times,
// at most every 10 s.
func Interval(total time.Duration) time.Duration {
	return max(total/30, 10*time.Second)
}
