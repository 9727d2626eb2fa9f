package envoyhost

// Bench: one request run n times inside the host (BENCH), and the counts a
// run yields that do not depend on the machine's speed.

import (
	"encoding/json"
	"fmt"
	"time"
)

// BenchResult is the outcome of Bench.
type BenchResult struct {
	N            int           `json:"n"`
	K            int           `json:"k"`
	WallNS       int64         `json:"wall_ns"`
	CPUNS        int64         `json:"cpu_ns"` // process CPU (host + Go runtime threads)
	Errors       int           `json:"errors"`
	LocalReplies int           `json:"local_replies"`
	CAPIErrors   int           `json:"capi_errors"`
	ErrorLogs    int           `json:"error_logs"`
	Wall         time.Duration `json:"-"`
	// Go heap allocations in the library during the run (runtime.MemStats
	// Mallocs and TotalAlloc deltas); -1 when the library does not export
	// goAllocStats.
	GoMallocs    int64 `json:"go_mallocs"`
	GoAllocBytes int64 `json:"go_alloc_bytes"`
	// Boundary crossings during the run, by kind: C->Go callbacks (the
	// envoyGoFilterOnHttp* entry points) and Go->C host functions (cgo.cc's
	// envoyGoFilterHttp*, without the envoyGoFilter prefix).
	C2Go map[string]int64 `json:"c2go"`
	Go2C map[string]int64 `json:"go2c"`
	// Keys counts property paths and stream-info value ids read, as
	// "HttpGetStringProperty request.duration" or "HttpGetIntegerValue 2".
	Keys map[string]int64 `json:"keys"`
}

// Crossings is the per-request cost of a Bench run that a machine's speed
// does not change: calls across the boundary and Go allocations.
type Crossings struct {
	C2Go, Go2C        float64
	Allocs, AllocByte float64 // -1: unknown
	// ByKind: calls per request of each C->Go and Go->C kind.
	ByKind map[string]float64
	// Keys: reads per request of each property path / value id.
	Keys map[string]float64
}

// PerRequest divides the run's counts by its requests.
func (b *BenchResult) PerRequest() Crossings {
	n := float64(b.N)
	c := Crossings{ByKind: map[string]float64{}, Keys: map[string]float64{}, Allocs: -1, AllocByte: -1}
	if n == 0 {
		return c
	}
	for k, v := range b.C2Go {
		c.C2Go += float64(v) / n
		c.ByKind[k] = float64(v) / n
	}
	for k, v := range b.Go2C {
		c.Go2C += float64(v) / n
		c.ByKind[k] = float64(v) / n
	}
	for k, v := range b.Keys {
		c.Keys[k] = float64(v) / n
	}
	if b.GoMallocs >= 0 {
		c.Allocs, c.AllocByte = float64(b.GoMallocs)/n, float64(b.GoAllocBytes)/n
	}
	return c
}

// CPUPerRequest is process CPU time per request.
func (b *BenchResult) CPUPerRequest() time.Duration {
	if b.N == 0 {
		return 0
	}
	return time.Duration(b.CPUNS / int64(b.N))
}

// RequestsPerSecond is the throughput over wall time.
func (b *BenchResult) RequestsPerSecond() float64 {
	if b.WallNS == 0 {
		return 0
	}
	return float64(b.N) / (float64(b.WallNS) / 1e9)
}

// Bench runs r n times spread over workers 0..k-1 (k <= Options.Workers).
// Requests are not recorded (events are only counted).
func (h *Host) Bench(r *Request, n, k int) (*BenchResult, error) {
	lines, err := r.lines()
	if err != nil {
		return nil, err
	}
	// RUN once so the host has the spec (and to surface errors early)
	lines = append(lines, "RUN", fmt.Sprintf("BENCH %d %d", n, k))
	h.mu.Lock()
	defer h.mu.Unlock()
	runOut, err := h.send(lines[:len(lines)-1], h.timeout)
	if err != nil {
		return nil, err
	}
	var res Result
	if json.Unmarshal([]byte(runOut), &res) == nil && res.Error != "" {
		return nil, fmt.Errorf("envoyhost: bench warm-up request failed: %s", res.Error)
	}
	out, err := h.send(lines[len(lines)-1:], 10*time.Minute)
	if err != nil {
		return nil, err
	}
	var b BenchResult
	if err := json.Unmarshal([]byte(out), &b); err != nil {
		return nil, err
	}
	b.Wall = time.Duration(b.WallNS)
	return &b, nil
}
