package tcpstats

import (
	"testing"
	"time"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
)

// BenchmarkConnection is the filter's whole cost for one short connection:
// create, open (two address reads and table lookups), one read, one write,
// close (one registry record).
func BenchmarkConnection(b *testing.B) {
	tab := tableWith(b, "10.0.0.1", client, "10.0.0.2", server)
	cfg, _ := testConfig(b, "inbound", tab)
	cb := newCB("10.0.0.2:9080", "10.0.0.1:51000")
	buf := make([]byte, 512)
	b.ReportAllocs()
	for b.Loop() {
		f := cfg.CreateFilter(cb)
		f.OnNewConnection()
		f.OnData(buf, false)
		f.OnWrite(buf, false)
		f.OnEvent(api.RemoteClose)
	}
}

// BenchmarkConnectionParallel: the same from several workers at once.
func BenchmarkConnectionParallel(b *testing.B) {
	tab := tableWith(b, "10.0.0.1", client, "10.0.0.2", server)
	cfg, _ := testConfig(b, "inbound", tab)
	buf := make([]byte, 512)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		cb := newCB("10.0.0.2:9080", "10.0.0.1:51000")
		for pb.Next() {
			f := cfg.CreateFilter(cb)
			f.OnNewConnection()
			f.OnData(buf, false)
			f.OnWrite(buf, false)
			f.OnEvent(api.RemoteClose)
		}
	})
}

// BenchmarkOnData is the per-data-callback cost (must not allocate).
func BenchmarkOnData(b *testing.B) {
	cfg, _ := testConfig(b, "inbound", tableWith(b, "10.0.0.1", client))
	f := cfg.CreateFilter(newCB("10.0.0.2:9080", "10.0.0.1:51000"))
	f.OnNewConnection()
	buf := make([]byte, 16384)
	b.ReportAllocs()
	for b.Loop() {
		f.OnData(buf, false)
	}
	f.OnEvent(api.RemoteClose)
}

// BenchmarkTick10k: one scheduler pass over 10k live connections, all due.
func BenchmarkTick10k(b *testing.B) {
	cfg, sched := testConfig(b, "inbound", tableWith(b, "10.0.0.1", client))
	var fs []api.DownstreamFilter
	for i := 0; i < 10000; i++ {
		f := cfg.CreateFilter(newCB("10.0.0.2:9080", "10.0.0.1:51000"))
		f.OnNewConnection()
		fs = append(fs, f)
	}
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		for _, f := range fs[:100] {
			f.OnData([]byte("x"), false)
		}
		now = now.Add(5 * time.Second)
		sched.Tick(now)
	}
	for _, f := range fs {
		f.OnEvent(api.LocalClose)
	}
}
