package telemetry

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
)

// BenchmarkRecordKnownSeries: one request for a label set the worker has
// seen (a cached peer): the steady state. Target ≤300 ns, 0 allocs.
func BenchmarkRecordKnownSeries(b *testing.B) {
	r := NewRegistry(Options{})
	k := clientKey(200)
	o := &HTTPObservation{HasDuration: true, DurationMs: 12, HasBytes: true, RequestBytes: 300, ResponseBytes: 5000}
	r.RecordHTTP(0, &k, o)
	b.ReportAllocs()
	for b.Loop() {
		r.RecordHTTP(0, &k, o)
	}
}

// BenchmarkRecordKnownSeriesNative: the same with native histograms on
// (classic and native buckets both recorded).
func BenchmarkRecordKnownSeriesNative(b *testing.B) {
	r := NewRegistry(Options{NativeHistograms: true, NativeSchema: 3})
	k := clientKey(200)
	o := &HTTPObservation{HasDuration: true, DurationMs: 12, HasBytes: true, RequestBytes: 300, ResponseBytes: 5000}
	r.RecordHTTP(0, &k, o)
	b.ReportAllocs()
	for b.Loop() {
		r.RecordHTTP(0, &k, o)
	}
}

// BenchmarkRecordNewSeries: every request brings a new label set (a new
// peer or service): the series is created, its labels rendered and interned.
func BenchmarkRecordNewSeries(b *testing.B) {
	r := NewRegistry(Options{MaxSeries: 1 << 30, MaxSeriesBytes: 1 << 40, MaxExpositionBytes: 1 << 40})
	o := &HTTPObservation{HasDuration: true, DurationMs: 12}
	keys := make([]Key, b.N)
	for i := range keys {
		keys[i] = clientKey(200)
		keys[i].Peer = r.InternPeer(Peer{Workload: fmt.Sprintf("w-%d", i), Namespace: "ns"})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.RecordHTTP(0, &keys[i], o)
	}
}

// BenchmarkRecordParallel compares 1 and 2 writer goroutines, each acting as
// its own Envoy worker over the same 16 label sets, splitting b.N between
// them: ns/op is wall time per record, so perfect scaling halves it.
func BenchmarkRecordParallel(b *testing.B) {
	for _, writers := range []int{1, 2} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			r := NewRegistry(Options{})
			keys := make([]Key, 16)
			for i := range keys {
				keys[i] = clientKey(uint16(200 + i))
			}
			o := &HTTPObservation{HasDuration: true, DurationMs: 12, HasBytes: true, RequestBytes: 300, ResponseBytes: 5000}
			var worker atomic.Uint32
			var wg sync.WaitGroup
			b.ResetTimer()
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					id := worker.Add(1)
					for i := 0; i < b.N/writers; i++ {
						r.RecordHTTP(id, &keys[i&15], o)
					}
				}()
			}
			wg.Wait()
		})
	}
}

func filledRegistry(n int) *Registry {
	r := NewRegistry(Options{MaxSeries: n + 1, MaxSeriesBytes: 1 << 40, MaxExpositionBytes: 1 << 40, IstioVersion: "1.31.1"})
	o := &HTTPObservation{HasDuration: true, DurationMs: 12, HasBytes: true, RequestBytes: 300, ResponseBytes: 5000}
	for i := 0; i < n; i++ {
		k := clientKey(200)
		k.Peer = r.InternPeer(Peer{Workload: fmt.Sprintf("workload-%d", i), Namespace: "ns", CanonicalService: "svc", CanonicalRevision: "v1", App: "app", Version: "v1", Cluster: "Kubernetes"})
		r.RecordHTTP(uint32(i&1), &k, o)
	}
	return r
}

// BenchmarkExposition renders the registry holding N label sets (each label
// set = 1 counter + 3 histograms of 20 buckets, i.e. 67 sample lines; 100k
// label sets are ~6.7M lines). Reports bytes and lines per scrape.
func BenchmarkExposition(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("labelsets=%d", n), func(b *testing.B) {
			r := filledRegistry(n)
			buf := r.AppendText(nil)
			b.ReportMetric(float64(len(buf)), "bytes/scrape")
			b.ReportMetric(float64(bytes.Count(buf, []byte{'\n'})), "lines/scrape")
			b.ResetTimer()
			for b.Loop() {
				buf = r.AppendText(buf[:0])
			}
		})
	}
}

// BenchmarkExpositionCounterOnly renders only istio_requests_total (the
// other families dropped by config): N label sets = N series in the
// Prometheus sense, which is what the "100k series ≤100 ms" target counts.
func BenchmarkExpositionCounterOnly(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("series=%d", n), func(b *testing.B) {
			o, _ := CompileOverrides([]MetricOverride{{Name: "request_duration_milliseconds", Drop: true}, {Name: "request_bytes", Drop: true}, {Name: "response_bytes", Drop: true}})
			r := NewRegistry(Options{MaxSeries: n + 1, MaxSeriesBytes: 1 << 40, MaxExpositionBytes: 1 << 40, Overrides: o})
			for i := 0; i < n; i++ {
				k := clientKey(200)
				k.Peer = r.InternPeer(Peer{Workload: fmt.Sprintf("workload-%d", i), Namespace: "ns"})
				r.RecordHTTP(0, &k, &HTTPObservation{})
			}
			buf := r.AppendText(nil)
			b.ReportMetric(float64(len(buf)), "bytes/scrape")
			b.ResetTimer()
			for b.Loop() {
				buf = r.AppendText(buf[:0])
			}
		})
	}
}

// BenchmarkExpositionExpfmt is the comparator: the same counter family
// built as a dto.MetricFamily and written by expfmt, which is why the big
// families bypass it.
func BenchmarkExpositionExpfmt(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("series=%d", n), func(b *testing.B) {
			k := clientKey(200)
			vals := k.Values()
			var buf bytes.Buffer
			b.ResetTimer()
			for b.Loop() {
				buf.Reset()
				f := &dto.MetricFamily{Name: proto.String("istio_requests_total"), Type: dto.MetricType_COUNTER.Enum()}
				for i := 0; i < n; i++ {
					m := &dto.Metric{Counter: &dto.Counter{Value: proto.Float64(1)}}
					for l := Label(0); l < NumLabels; l++ {
						v := vals[l]
						if l == LDestinationWorkload {
							v = fmt.Sprintf("workload-%d", i)
						}
						m.Label = append(m.Label, &dto.LabelPair{Name: proto.String(l.String()), Value: proto.String(v)})
					}
					f.Metric = append(f.Metric, m)
				}
				_, _ = expfmt.MetricFamilyToText(&buf, f)
			}
		})
	}
}
