package workloads

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var (
	wlA = Workload{Name: "frontend", Namespace: "shop", CanonicalService: "frontend", CanonicalRevision: "v1", App: "frontend", Version: "v1", Cluster: "c1", ServiceAccount: "fe"}
	wlB = Workload{Name: "reviews-v2", Namespace: "shop", CanonicalService: "reviews", CanonicalRevision: "v2", Cluster: "c1"}
)

func up(name string, w Workload) Update { return Update{Name: name, Version: "v-" + name, Workload: w} }

func TestApply(t *testing.T) {
	type lookup struct {
		addr string
		want *Workload // nil: absent
	}
	cases := []struct {
		name    string
		deltas  []Delta
		wantErr string // for the last delta
		wantLen int
		lookups []lookup
	}{
		{"add", []Delta{{Updates: []Update{up("10.0.0.1", wlA), up("fd00::2", wlB)}}}, "", 2,
			[]lookup{{"10.0.0.1", &wlA}, {"fd00::2", &wlB}, {"::ffff:10.0.0.1", &wlA}, {"10.0.0.3", nil}}},
		{"replace and remove", []Delta{
			{Updates: []Update{up("10.0.0.1", wlA), up("10.0.0.2", wlA)}},
			{Updates: []Update{up("10.0.0.1", wlB)}, Removals: []string{"10.0.0.2", "10.9.9.9"}},
		}, "", 1, []lookup{{"10.0.0.1", &wlB}, {"10.0.0.2", nil}}},
		{"later change to one address wins", []Delta{{Updates: []Update{up("10.0.0.1", wlA), up("10.0.0.1", wlB)}}}, "", 1,
			[]lookup{{"10.0.0.1", &wlB}}},
		{"bad name rejects the whole delta", []Delta{
			{Updates: []Update{up("10.0.0.1", wlA)}},
			{Updates: []Update{up("10.0.0.2", wlB), up("not-an-ip", wlB)}, Removals: []string{"10.0.0.1"}},
		}, "not an IP address", 1, []lookup{{"10.0.0.1", &wlA}, {"10.0.0.2", nil}}},
		{"bad removal rejects the whole delta", []Delta{
			{Updates: []Update{up("10.0.0.1", wlA)}},
			{Updates: []Update{up("10.0.0.2", wlB)}, Removals: []string{"10.0.0.1/32"}},
		}, "not an IP address", 1, []lookup{{"10.0.0.1", &wlA}, {"10.0.0.2", nil}}},
		{"oversized field", []Delta{{Updates: []Update{up("10.0.0.1", Workload{Name: strings.Repeat("x", 254)})}}}, "longer than", 0, nil},
		{"invalid UTF-8", []Delta{{Updates: []Update{up("10.0.0.1", Workload{App: "\xff"})}}}, "UTF-8", 0, nil},
		{"zone", []Delta{{Updates: []Update{up("fe80::1%eth0", wlA)}}}, "zone", 0, nil},
		{"bound: rejected whole", []Delta{
			{Updates: []Update{up("10.0.0.1", wlA), up("10.0.0.2", wlA), up("10.0.0.3", wlA)}},
			{Updates: []Update{up("10.0.0.4", wlA), up("10.0.0.5", wlA)}},
		}, "exceed the table bound 4", 3, []lookup{{"10.0.0.4", nil}}},
		{"bound: replacing and removing make room", []Delta{
			{Updates: []Update{up("10.0.0.1", wlA), up("10.0.0.2", wlA), up("10.0.0.3", wlA)}},
			{Updates: []Update{up("10.0.0.1", wlB), up("10.0.0.4", wlA), up("10.0.0.5", wlA)}, Removals: []string{"10.0.0.2"}},
		}, "", 4, []lookup{{"10.0.0.5", &wlA}, {"10.0.0.1", &wlB}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tab := NewTable(4)
			var err error
			for _, d := range tc.deltas {
				err = tab.Apply(d)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("apply: %v", err)
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrRejected) {
					t.Fatalf("apply: %v, want an ErrRejected naming %q", err, tc.wantErr)
				}
				if tab.Rejected() != 1 {
					t.Errorf("rejected = %d", tab.Rejected())
				}
			}
			if tab.Len() != tc.wantLen {
				t.Errorf("len = %d, want %d", tab.Len(), tc.wantLen)
			}
			for _, l := range tc.lookups {
				got := tab.Lookup(netip.MustParseAddr(l.addr))
				if (got == nil) != (l.want == nil) || (got != nil && *got != *l.want) {
					t.Errorf("lookup %s = %+v, want %+v", l.addr, got, l.want)
				}
			}
		})
	}
}

func TestInterningAndVersions(t *testing.T) {
	tab := NewTable(0)
	if err := tab.Apply(Delta{Updates: []Update{up("10.0.0.1", wlA), up("10.0.0.2", wlA), up("10.0.0.3", wlB)}}); err != nil {
		t.Fatal(err)
	}
	a, b := tab.Lookup(netip.MustParseAddr("10.0.0.1")), tab.Lookup(netip.MustParseAddr("10.0.0.2"))
	if a != b {
		t.Error("equal workloads are not shared")
	}
	if err := tab.Apply(Delta{Removals: []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}}); err != nil {
		t.Fatal(err)
	}
	if len(tab.intern) != 0 {
		t.Errorf("intern map keeps %d unused workloads", len(tab.intern))
	}
	if err := tab.Apply(Delta{Updates: []Update{up("10.0.0.7", wlA)}}); err != nil {
		t.Fatal(err)
	}
	if v := tab.Versions(); len(v) != 1 || v["10.0.0.7"] != "v-10.0.0.7" {
		t.Errorf("versions %v", v)
	}
}

// Lookups concurrent with updates: run with -race. Readers must always see
// either the old or the new workload of an address, never a torn entry.
func TestConcurrentApplyAndLookup(t *testing.T) {
	tab := NewTable(0)
	const n = 512
	addrs := make([]netip.Addr, n)
	var initial Delta
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		initial.Updates = append(initial.Updates, up(addrs[i].String(), wlA))
	}
	if err := tab.Apply(initial); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				w := tab.Lookup(addrs[i%n])
				if w != nil && w.Name != wlA.Name && w.Name != wlB.Name {
					t.Errorf("torn read %+v", w)
					return
				}
			}
		}()
	}
	for round := 0; round < 200; round++ {
		var d Delta
		for i := round % 7; i < n; i += 7 {
			switch round % 3 {
			case 0:
				d.Updates = append(d.Updates, up(addrs[i].String(), wlB))
			case 1:
				d.Removals = append(d.Removals, addrs[i].String())
			default:
				d.Updates = append(d.Updates, up(addrs[i].String(), wlA))
			}
		}
		if err := tab.Apply(d); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

func TestLookupDoesNotAllocate(t *testing.T) {
	tab := NewTable(0)
	if err := tab.Apply(Delta{Updates: []Update{up("10.0.0.1", wlA), up("fd00::1", wlB)}}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"10.0.0.1", "fd00::1", "::ffff:10.0.0.1", "192.0.2.1"} {
		a := netip.MustParseAddr(s)
		if n := testing.AllocsPerRun(100, func() { tab.Lookup(a) }); n != 0 {
			t.Errorf("lookup %s: %v allocs", s, n)
		}
	}
}

// BenchmarkLookup: "hot" cycles through 64 addresses of a 100k table (a
// proxy talks to few peers: entries stay in cache); "cold" through all 100k
// (every lookup misses the CPU caches twice: control word and slot).
func BenchmarkLookup(b *testing.B) {
	tab, addrs := bigTable(b, 100000)
	for _, bc := range []struct {
		name string
		n    int
	}{{"hot", 64}, {"cold", len(addrs)}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if tab.Lookup(addrs[(i*7919)%bc.n]) == nil {
					b.Fatal("miss")
				}
				i++
			}
		})
	}
}

func BenchmarkLookupParallel(b *testing.B) {
	tab, addrs := bigTable(b, 100000)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			tab.Lookup(addrs[i%len(addrs)])
			i++
		}
	})
}

// BenchmarkApplyOne is the cost of one pod change on a 100k table (one
// shard copied).
func BenchmarkApplyOne(b *testing.B) {
	tab, addrs := bigTable(b, 100000)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		w := wlA
		if i%2 == 0 {
			w = wlB
		}
		if err := tab.Apply(Delta{Updates: []Update{up(addrs[i%len(addrs)].String(), w)}}); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkTableMemory reports the heap per entry of a 100k-entry table
// whose pods belong to 1000 workloads, with 20-byte versions.
func BenchmarkTableMemory(b *testing.B) {
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		tab, _ := bigTable(b, 100000)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(tab.Len()), "bytes/entry")
		runtime.KeepAlive(tab)
	}
}

func bigTable(b testing.TB, n int) (*Table, []netip.Addr) {
	tab := NewTable(0)
	addrs := make([]netip.Addr, n)
	d := Delta{Updates: make([]Update, n)}
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		w := wlA
		w.Name = fmt.Sprintf("workload-%d", i%1000)
		d.Updates[i] = Update{Name: addrs[i].String(), Version: fmt.Sprintf("%020d", i), Workload: w}
	}
	if err := tab.Apply(d); err != nil {
		b.Fatal(err)
	}
	return tab, addrs
}
