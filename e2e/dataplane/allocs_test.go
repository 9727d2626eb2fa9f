package dataplane

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// allocSite is one allocation stack's per-request count in a benchmark.
type allocSite struct {
	stack   []string // "function file:line", innermost first
	objects float64
	bytes   float64
}

// readAllocProfile reads a file written by leanmesh.so's goAllocStats with
// LEANMESH_ALLOC_PROFILE set: cumulative objects and bytes per stack.
func readAllocProfile(t testing.TB, path string) map[string][2]int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string][2]int64{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), "\t", 3)
		if len(parts) != 3 {
			t.Fatalf("%s: bad line %q", path, sc.Text())
		}
		o, _ := strconv.ParseInt(parts[0], 10, 64)
		b, _ := strconv.ParseInt(parts[1], 10, 64)
		v := m[parts[2]]
		m[parts[2]] = [2]int64{v[0] + o, v[1] + b}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

// allocDiff is after - before, per request, largest first.
func allocDiff(before, after map[string][2]int64, n int) []allocSite {
	var out []allocSite
	for k, a := range after {
		if strings.Contains(k, "main.writeAllocProfile") {
			continue // the profile writer's own work between two snapshots
		}
		b := before[k]
		if d := a[0] - b[0]; d > 0 {
			out = append(out, allocSite{strings.Split(k, " <- "), float64(d) / float64(n), float64(a[1]-b[1]) / float64(n)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].objects > out[j].objects })
	return out
}

// site is the first frame outside the runtime: the line that allocated.
func (s allocSite) site() string {
	for _, f := range s.stack {
		if !strings.HasPrefix(f, "runtime.") && !strings.HasPrefix(f, "internal/") {
			return shortFrame(f)
		}
	}
	return shortFrame(s.stack[0])
}

// shortFrame trims a frame's file to module-relative form.
func shortFrame(f string) string {
	fn, file, ok := strings.Cut(f, " ")
	if !ok {
		return f
	}
	for _, mark := range []string{"/contrib/golang/", "/leanmesh/leanmesh/", "/src/"} {
		if i := strings.Index(file, mark); i >= 0 {
			file = file[i+1:]
			break
		}
	}
	if i := strings.LastIndex(fn, "/"); i >= 0 {
		fn = fn[i+1:]
	}
	return fn + " " + file
}

// allocSources names every Go allocation a steady-state request makes
// through the ABI, by the function that allocates (the innermost frame
// outside the runtime), with how many per request of each shape may come
// from it and why. SDK lines are Envoy v1.39.1's
// contrib/golang/filters/http/source/go/pkg/http.
var allocSources = map[string]struct {
	http, grpc float64
	why        string
}{
	"http.createRequest":             {1, 1, "shim.go:129: the SDK's per-request httpRequest (with its finalizer)"},
	"http._Cfunc_GoStringN":          {1, 1, "filter.go:241 pluginName(), called by createRequest (shim.go:146): the plugin name copied into a Go string per request"},
	"http.envoyGoFilterOnHttpHeader": {2, 3, "shim.go:188/210/221: the header (and trailer) map wrapper the SDK builds for each header callback"},
	"http.envoyGoFilterOnHttpLog":    {2, 3, "shim.go:295/320/333: the request header, response header (and response trailer) map wrappers the SDK builds for OnLog"},
	"http.envoyGoFilterOnHttpData":   {0, 2, "shim.go:260: the httpBuffer wrapper the SDK builds for each data callback"},
	// The per-stream filter object the SDK's factory contract requires comes
	// from a pool (filters/httpstats/filter.go Factory/OnDestroy): a new one
	// only when a GC cycle emptied the pool, far below once per request.
	"httpstats.Factory": {0.1, 0.1, "filters/httpstats/filter.go: a pooled filter object, allocated only after a GC emptied the pool"},
}

// TestAllocationsAttributed profiles every allocation (runtime.MemProfileRate
// = 1 in the .so, LEANMESH_ALLOC_PROFILE) across N steady-state requests of
// each shape and fails on any source not in allocSources, or more from one
// than it allows. The counts are the profile's; TestCrossingsPinned bounds
// runtime.MemStats' count, which also counts tiny allocations one by one.
func TestAllocationsAttributed(t *testing.T) {
	dir := t.TempDir()
	prefix := filepath.Join(dir, "allocs")
	s := startSidecarEnv(t, productpage, 1, nil, []string{"LEANMESH_ALLOC_PROFILE=" + prefix})
	const n = 1000
	seq := 0
	for _, sh := range shapes {
		cfg := s.outbound
		if sh.inbound {
			cfg = s.inbound
		}
		countRun(t, s.h, sh.mk(t, cfg), n)
		seq += 2
		sites := allocDiff(readAllocProfile(t, fmt.Sprintf("%s.%d", prefix, seq-1)), readAllocProfile(t, fmt.Sprintf("%s.%d", prefix, seq)), n)
		bySource := map[string]float64{}
		var sum float64
		var b strings.Builder
		for _, st := range sites {
			sum += st.objects
			if st.objects < 0.05 {
				continue // not per request: the GC, finalizers, a map growing
			}
			src := st.site()
			fn, _, _ := strings.Cut(src, " ")
			bySource[fn] += st.objects
			fmt.Fprintf(&b, "  %.2f  %5.0f B  %s\n", st.objects, st.bytes, src)
			for i, f := range st.stack {
				if i > 0 && i < 4 {
					fmt.Fprintf(&b, "           <- %s\n", shortFrame(f))
				}
			}
		}
		t.Logf("%s: %.2f allocations per request (profile)\n%s", sh.name, sum, b.String())
		grpc := strings.HasSuffix(sh.name, "grpc")
		for fn, got := range bySource {
			src, ok := allocSources[fn]
			allowed := src.http
			if grpc {
				allowed = src.grpc
			}
			if !ok || got > allowed+0.1 {
				t.Errorf("%s: %.2f allocations per request from %s, allowed %g: attribute it in allocSources", sh.name, got, fn, allowed)
			}
		}
	}
}
