package dataplane

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/leanmesh/leanmesh/e2e/envoyhost"
)

type variant struct {
	name string
	h    *envoyhost.Host
	req  *envoyhost.Request
}

type measurement struct{ cpu, rps []float64 }

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// BenchmarkDataPlane runs the same outbound request, side by side in one
// run, through (1) the host calling empty C functions (the boundary floor),
// (2) a no-op Go filter built from the same SDK, (3) leanmesh (telemetry +
// metadata exchange) and (4) the same metrics recorded through the SDK's own
// metric API, with 1 and 2 worker threads, in interleaved rounds, and prints
// the ratio table. Use -benchtime=1x: each variant runs
// LEANMESH_BENCH_N requests (default 100,000) per round, LEANMESH_BENCH_ROUNDS
// rounds (default 3; more rounds make the medians steadier on a busy machine).
func BenchmarkDataPlane(b *testing.B) {
	n := 100000
	if v, err := strconv.Atoi(os.Getenv("LEANMESH_BENCH_N")); err == nil && v > 0 {
		n = v
	}
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("LEANMESH_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	artifacts(b)
	start := func(opts envoyhost.Options, plugin string) (*envoyhost.Host, uint64) {
		opts.HostBin, opts.Workers, opts.LogLevel = art.host, 2, 4
		h, err := envoyhost.Start(opts)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { h.Close() })
		a, _ := envoyhost.TypedStruct("type.googleapis.com/x", map[string]interface{}{"direction": "outbound"})
		if plugin != "leanmesh" {
			a = nil
		}
		id, err := h.Config(plugin, a)
		if err != nil {
			b.Fatal(err)
		}
		return h, id
	}
	floorH, floorC := start(envoyhost.Options{Floor: true}, "noop")
	noopH, noopC := start(envoyhost.Options{SO: art.noop}, "noop")
	sdkH, sdkC := start(envoyhost.Options{SO: art.sdkstats}, "sdkstats")
	lm := startSidecar(b, productpage, 2, nil)
	lmSDK := startSidecarEnv(b, productpage, 2, nil, []string{"LEANMESH_SDK_HEADERS=1"})
	lmSDKReads := startSidecarEnv(b, productpage, 2, nil, []string{"LEANMESH_SDK_READS=1"})
	// GOMAXPROCS=4 with 2 workers on 2 cores: the Go runtime's background
	// work (GC workers, sysmon's retakes) gets Ps of its own instead of
	// taking the workers'.
	lmGMP := startSidecarEnv(b, productpage, 2, nil, []string{"GOMAXPROCS=4"})
	variants := []variant{
		{"floor", floorH, steadyRequest(b, floorC)},
		{"noop", noopH, steadyRequest(b, noopC)},
		{"leanmesh", lm.h, steadyRequest(b, lm.outbound)},
		{"sdkstats", sdkH, steadyRequest(b, sdkC)},
		// leanmesh writing MX headers with the SDK's Set/Del (which copy the map first)
		{"lm-sdkhdr", lmSDK.h, steadyRequest(b, lmSDK.outbound)},
		// leanmesh reading through the SDK's methods (allocating) instead of
		// its direct reader (filters/cmd/leanmesh/reads.go)
		{"lm-sdkrd", lmSDKReads.h, steadyRequest(b, lmSDKReads.outbound)},
		// the runtime setting the pod patch and chart default (docs/performance.md)
		{"lm-gmp4", lmGMP.h, steadyRequest(b, lmGMP.outbound)},
	}
	// LEANMESH_BENCH_OLD_SO: an older leanmesh.so (e.g. built from an earlier
	// commit) measured side by side with the current one in the same run.
	var old *sidecar
	if so := os.Getenv("LEANMESH_BENCH_OLD_SO"); so != "" {
		old = startSidecarSO(b, productpage, 2, so)
		variants = append(variants, variant{"lm-old", old.h, steadyRequest(b, old.outbound)})
	}
	res := map[string]*measurement{}
	for round := 0; round < rounds; round++ {
		for _, k := range []int{1, 2} {
			for _, v := range variants {
				r, err := v.h.Bench(v.req, n, k)
				if err != nil || r.Errors != 0 || r.CAPIErrors != 0 {
					b.Fatalf("%s k=%d: %v %+v", v.name, k, err, r)
				}
				key := fmt.Sprintf("%s/%d", v.name, k)
				if res[key] == nil {
					res[key] = &measurement{}
				}
				res[key].cpu = append(res[key].cpu, float64(r.CPUPerRequest().Nanoseconds()))
				res[key].rps = append(res[key].rps, r.RequestsPerSecond())
			}
		}
	}
	cpu := func(name string, k int) float64 { return median(res[fmt.Sprintf("%s/%d", name, k)].cpu) }
	rps := func(name string, k int) float64 { return median(res[fmt.Sprintf("%s/%d", name, k)].rps) }
	fmt.Printf("\nleanmesh data plane, %d requests x %d rounds per cell (medians), %s\n", n, rounds, time.Now().Format(time.RFC3339))
	fmt.Printf("%-10s %14s %14s %14s %14s\n", "variant", "cpu ns/req k=1", "req/s k=1", "cpu ns/req k=2", "req/s k=2")
	for _, v := range variants {
		fmt.Printf("%-10s %14.0f %14.0f %14.0f %14.0f\n", v.name, cpu(v.name, 1), rps(v.name, 1), cpu(v.name, 2), rps(v.name, 2))
	}
	for _, k := range []int{1, 2} {
		ratio := cpu("leanmesh", k) / cpu("noop", k)
		marginal := (cpu("leanmesh", k) - cpu("noop", k)) / (cpu("sdkstats", k) - cpu("noop", k))
		fmt.Printf("k=%d: leanmesh/noop CPU = %.2fx (target <= 1.3)   (leanmesh-noop)/(sdkstats-noop) = %.2f (target <= 0.33)\n", k, ratio, marginal)
		b.ReportMetric(ratio, fmt.Sprintf("leanmesh/noop-cpu-k%d", k))
		b.ReportMetric(marginal, fmt.Sprintf("marginal-vs-sdkstats-k%d", k))
	}
	for _, k := range []int{1, 2} {
		d := cpu("leanmesh", k) - cpu("lm-gmp4", k)
		fmt.Printf("k=%d: GOMAXPROCS=4 instead of the default (%d cores) changes leanmesh's CPU by %+.0f ns/request (positive: saves)\n", k, runtime.NumCPU(), d)
		b.ReportMetric(d, fmt.Sprintf("gomaxprocs4-saving-ns-k%d", k))
	}
	if old := res["lm-old/1"]; old != nil {
		for _, k := range []int{1, 2} {
			fmt.Printf("k=%d: leanmesh now vs the old build: %.0f vs %.0f ns/request CPU\n", k, cpu("leanmesh", k), cpu("lm-old", k))
		}
	}
	for _, k := range []int{1, 2} {
		saved := cpu("lm-sdkhdr", k) - cpu("leanmesh", k)
		fmt.Printf("k=%d: writing MX headers through the C API instead of HeaderMap.Set/Del saves %.0f ns/request\n", k, saved)
		b.ReportMetric(saved, fmt.Sprintf("direct-header-saving-ns-k%d", k))
	}
	for _, k := range []int{1, 2} {
		saved := cpu("lm-sdkrd", k) - cpu("leanmesh", k)
		fmt.Printf("k=%d: reading through the direct reader instead of the SDK's methods saves %.0f ns/request\n", k, saved)
		b.ReportMetric(saved, fmt.Sprintf("direct-read-saving-ns-k%d", k))
	}
	crossingsTable(b, n, rounds, lm, lmSDKReads, old, floorH, floorC, noopH, noopC, sdkH, sdkC)
	scale := rps("leanmesh", 2) / rps("leanmesh", 1)
	fmt.Printf("leanmesh throughput 2 workers / 1 worker = %.2fx (target >= 1.8; this machine has 2 cores shared with the host's main thread)\n", scale)
	b.ReportMetric(scale, "leanmesh-scaling-2w/1w")
}

// crossingsTable prints, for every request shape (outbound and inbound, HTTP
// and gRPC) and filter, the CPU per request next to the counts a machine's
// speed does not change: C->Go callbacks, Go->C calls (request path; the
// GC-paced finalizer calls apart) and Go allocations per request through the
// ABI. One worker, medians of the rounds of n/4 requests each.
func crossingsTable(b *testing.B, n, rounds int, lm, lmSDKReads, old *sidecar, floorH *envoyhost.Host, floorC uint64, noopH *envoyhost.Host, noopC uint64, sdkH *envoyhost.Host, sdkC uint64) {
	type row struct {
		name    string
		h       *envoyhost.Host
		in, out uint64
	}
	rows := []row{{"floor", floorH, floorC, floorC}, {"noop", noopH, noopC, noopC}, {"leanmesh", lm.h, lm.inbound, lm.outbound},
		{"lm-sdkrd", lmSDKReads.h, lmSDKReads.inbound, lmSDKReads.outbound}, {"sdkstats", sdkH, sdkC, sdkC}}
	if old != nil {
		rows = append(rows, row{"lm-old", old.h, old.inbound, old.outbound})
	}
	m := max(n/4, 1000)
	fmt.Printf("\nper request, 1 worker, %d requests x %d rounds (cpu: median); C->Go and Go->C on the request path, finalizer calls apart\n", m, rounds)
	fmt.Printf("%-9s %-9s %10s %6s %6s %9s %7s %8s  %s\n", "shape", "variant", "cpu ns", "C->Go", "Go->C", "finalize", "allocs", "bytes", "Go->C by kind")
	for _, sh := range shapes {
		for _, r := range rows {
			cfg := r.out
			if sh.inbound {
				cfg = r.in
			}
			req := sh.mk(b, cfg)
			var cpus []float64
			var last *envoyhost.BenchResult
			for round := 0; round < rounds; round++ {
				res, err := r.h.Bench(req, m, 1)
				if err != nil || res.Errors != 0 {
					b.Fatalf("%s %s: %v %+v", sh.name, r.name, err, res)
				}
				cpus = append(cpus, float64(res.CPUPerRequest().Nanoseconds()))
				last = res
			}
			c := last.PerRequest()
			c2go, go2c := requestPath(c)
			fin := c.ByKind["HttpFinalize"]
			var go2cKinds []string
			for k, v := range c.ByKind {
				if !gcPaced[k] && !strings.HasPrefix(k, "On") && k != "RequestSemaDec" {
					go2cKinds = append(go2cKinds, fmt.Sprintf("%s=%g", strings.TrimPrefix(k, "Http"), v))
				}
			}
			sort.Strings(go2cKinds)
			allocs, bytes := "n/a", "n/a"
			if c.Allocs >= 0 {
				allocs, bytes = fmt.Sprintf("%.1f", c.Allocs), fmt.Sprintf("%.0f", c.AllocByte)
			}
			fmt.Printf("%-9s %-9s %10.0f %6g %6g %9.2f %7s %8s  %s\n", sh.name, r.name, median(cpus), c2go, go2c, fin, allocs, bytes, strings.Join(go2cKinds, " "))
			b.ReportMetric(go2c, fmt.Sprintf("%s-%s-go2c/req", sh.name, r.name))
		}
	}
}
