package telemetry

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

func peerKey(r *Registry, i int) Key {
	p := r.InternPeer(Peer{Workload: fmt.Sprintf("client-%d", i), Namespace: "churn", CanonicalService: "client", App: "client"})
	return Key{Reporter: ReporterDestination, Local: localProductpage, Peer: p, ResponseCode: 200, ResponseFlags: "-"}
}

func TestEvictionAfterIntervalAndScrape(t *testing.T) {
	r := newRegistry(Options{EvictionInterval: time.Minute}) // no sweeper: the test drives the clock
	k := peerKey(r, 1)
	r.RecordHTTP(0, &k, &HTTPObservation{DurationMs: 3, HasDuration: true})
	for i := 0; i < 2*ticksPerInterval; i++ {
		if n := r.tickAndSweep(); n != 0 {
			t.Fatalf("tick %d: evicted %d series nobody scraped", i, n)
		}
	}
	// A scrape sees the final value; eviction waits one more tick after it.
	fams := parseExposition(t, r.AppendText(nil))
	if v := find(t, fams, "istio_requests_total", map[string]string{"source_workload": "client-1"}).GetCounter().GetValue(); v != 1 {
		t.Fatalf("scraped %v", v)
	}
	if n := r.tickAndSweep(); n != 1 {
		t.Fatalf("after a scrape and an idle interval: evicted %d, want 1", n)
	}
	if r.Series() != 0 || r.Evicted() != 1 {
		t.Fatalf("series %d evicted %d", r.Series(), r.Evicted())
	}
	if mem, exp := r.Usage(); mem != 0 || exp != 0 {
		t.Fatalf("budget accounting not released: mem %d exposition %d", mem, exp)
	}
	fams = parseExposition(t, r.AppendText(nil))
	if f := fams["istio_requests_total"]; f != nil && len(f.Metric) > 0 {
		t.Fatalf("evicted series still exposed: %v", f)
	}
	// The peer returns: counted from zero.
	r.RecordHTTP(0, &k, &HTTPObservation{})
	fams = parseExposition(t, r.AppendText(nil))
	if v := find(t, fams, "istio_requests_total", map[string]string{"source_workload": "client-1"}).GetCounter().GetValue(); v != 1 {
		t.Fatalf("returning peer counted %v, want 1 (from zero)", v)
	}
}

func TestEvictionSparesRecentAndUnscraped(t *testing.T) {
	r := newRegistry(Options{EvictionInterval: time.Minute})
	busy, idle := peerKey(r, 1), peerKey(r, 2)
	r.RecordHTTP(0, &idle, &HTTPObservation{})
	for i := 0; i < 3*ticksPerInterval; i++ {
		r.RecordHTTP(1, &busy, &HTTPObservation{})
		r.AppendText(nil)
		r.tickAndSweep()
	}
	if r.Series() != 1 {
		t.Fatalf("series %d, want the busy one only", r.Series())
	}
	// Recorded after the latest scrape: kept however long it idles.
	late := peerKey(r, 3)
	r.RecordHTTP(0, &late, &HTTPObservation{})
	for i := 0; i < 3*ticksPerInterval; i++ {
		r.tickAndSweep()
	}
	fams := parseExposition(t, r.AppendText(nil))
	find(t, fams, "istio_requests_total", map[string]string{"source_workload": "client-3"})
}

// A label set recorded by two workers is two series; it leaves the
// exposition only when both are evicted.
func TestEvictionPerWorkerMembers(t *testing.T) {
	r := newRegistry(Options{EvictionInterval: time.Minute})
	k := peerKey(r, 1)
	r.RecordHTTP(0, &k, &HTTPObservation{})
	r.RecordHTTP(1, &k, &HTTPObservation{})
	r.AppendText(nil)
	for i := 0; i < ticksPerInterval; i++ {
		r.RecordHTTP(1, &k, &HTTPObservation{})
		r.tickAndSweep()
		r.AppendText(nil)
	}
	r.tickAndSweep()
	if r.Evicted() != 1 {
		t.Fatalf("evicted %d, want worker 0's series", r.Evicted())
	}
	fams := parseExposition(t, r.AppendText(nil))
	if v := find(t, fams, "istio_requests_total", map[string]string{"source_workload": "client-1"}).GetCounter().GetValue(); v != float64(ticksPerInterval+1) {
		t.Fatalf("remaining value %v", v)
	}
}

// Churn: distinct peers come and go; with eviction the registry holds only
// the recent ones, and interned peers are released with their series.
func TestEvictionChurnFlat(t *testing.T) {
	for _, evict := range []bool{false, true} {
		opts := Options{}
		if evict {
			opts.EvictionInterval = time.Minute
		}
		r := newRegistry(opts)
		var sizes []int
		for round := 0; round < 10; round++ {
			for i := 0; i < 40; i++ {
				k := peerKey(r, round*40+i)
				r.RecordHTTP(uint32(i%4), &k, &HTTPObservation{DurationMs: 1, HasDuration: true})
			}
			sizes = append(sizes, len(r.AppendText(nil)))
			for i := 0; evict && i < ticksPerInterval/2; i++ {
				r.tickAndSweep()
			}
		}
		runtime.GC()
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // cleanups run on their own goroutine
		t.Logf("eviction=%v: scrape bytes per round %v; series %d, interned peers %d", evict, sizes, r.Series(), r.Peers())
		if evict {
			if sizes[9] > sizes[3]*11/10 {
				t.Errorf("scrape grows with eviction on: %v", sizes)
			}
			if r.Series() > 120 || r.Peers() > 120 {
				t.Errorf("series %d peers %d: not released", r.Series(), r.Peers())
			}
		} else if sizes[9] < sizes[3]*2 {
			t.Errorf("without eviction the scrape should grow: %v", sizes)
		}
	}
}

// The sweep releases the shard mutex every sweepBatch entries: a worker
// recording meanwhile waits for at most one batch, not the whole shard.
func TestEvictionBoundedLockHold(t *testing.T) {
	r := newRegistry(Options{EvictionInterval: time.Minute, MaxSeriesBytes: 1 << 40, MaxExpositionBytes: 1 << 40})
	const n = 50000
	for i := 0; i < n; i++ {
		k := Key{Reporter: ReporterSource, Local: localProductpage, Service: Service{Host: fmt.Sprintf("h%d", i)}, ResponseCode: 200}
		r.RecordHTTP(0, &k, &HTTPObservation{})
	}
	r.tickAndSweep()
	r.tickAndSweep()
	r.markScraped() // as a scrape does (rendering 100k label sets would take gigabytes)
	for r.clock.Load() < ticksPerInterval-1 {
		r.tickAndSweep()
	}
	hot := Key{Reporter: ReporterSource, Local: localProductpage, Service: Service{Host: "hot"}, ResponseCode: 200}
	r.RecordHTTP(0, &hot, &HTTPObservation{})
	done := make(chan int)
	go func() { done <- r.tickAndSweep() }()
	var worst time.Duration
	sweeping := true
	for sweeping {
		select {
		case got := <-done:
			if got != n {
				t.Errorf("evicted %d, want %d", got, n)
			}
			sweeping = false
		default:
			start := time.Now()
			r.RecordHTTP(0, &hot, &HTTPObservation{})
			worst = max(worst, time.Since(start))
		}
	}
	hold := time.Duration(r.maxHold.Load())
	entries := r.maxHoldEntries.Load()
	t.Logf("sweep of %d series in one shard: at most %d series examined per shard-mutex hold; longest hold %v, worst record latency meanwhile %v (wall clock on a shared machine: includes preemption)", n, entries, hold, worst)
	if entries > sweepBatch || entries == 0 {
		t.Errorf("the sweep examined %d series in one hold, want 1..%d", entries, sweepBatch)
	}
}

// Recording (new and known label sets), scraping (text and protobuf) and
// sweeping at once: run under -race, and every scrape must parse.
func TestEvictionConcurrentWithRecordAndScrape(t *testing.T) {
	r := newRegistry(Options{EvictionInterval: time.Minute, NativeHistograms: true, NativeSchema: 3})
	stop := make(chan struct{})
	done := make(chan struct{})
	for w := 0; w < 3; w++ {
		go func(w int) {
			defer func() { done <- struct{}{} }()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := peerKey(r, i%40)
				r.RecordHTTP(uint32(w), &k, &HTTPObservation{DurationMs: uint64(i % 50), HasDuration: true})
			}
		}(w)
	}
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			r.tickAndSweep()
			time.Sleep(time.Millisecond)
		}
	}()
	for i := 0; i < 8; i++ {
		parseExposition(t, r.AppendText(nil))
		body, _ := ContentFor(nil, protoAccept, r)
		decodeProto(t, body)
	}
	close(stop)
	for i := 0; i < 4; i++ {
		<-done
	}
	t.Logf("series %d, evicted %d", r.Series(), r.Evicted())
}
