package demo

import (
	"testing"

	"github.com/leanmesh/leanmesh/filters/telemetry"
)

// bucketQuantile must agree with what the real Prometheus answered in
// e2e/dataplane's TestPrometheusScrapesShippedConfig (10 requests at 4 ms,
// 10 at 30 ms) and gives the demo's expected P99.
func TestBucketQuantile(t *testing.T) {
	var mixed []float64
	for i := 0; i < 10; i++ {
		mixed = append(mixed, 4, 30)
	}
	var demo []float64
	for i := 0; i < demoRequests; i++ {
		demo = append(demo, demoDuration(i))
	}
	for _, c := range []struct {
		q      float64
		values []float64
		want   float64
	}{
		{0.5, mixed, 5}, {0.9, mixed, 45}, {0.99, mixed, 49.5},
		{0.99, demo, 24.75}, // 3..22 ms: 3 in (1,5], 5 in (5,10], 12 in (10,25]
	} {
		if got := bucketQuantile(c.q, c.values, telemetry.DefaultBuckets); got != c.want {
			t.Errorf("q%v of %v = %v, want %v", c.q, c.values, got, c.want)
		}
	}
}
