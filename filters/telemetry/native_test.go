package telemetry

import (
	"math"
	"math/rand"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// TestNativeMatchesClientGolang guards the hand-written native histogram
// against client_golang's: the same observations give the same schema,
// zero bucket, spans and deltas, for every schema.
func TestNativeMatchesClientGolang(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for schema := MinNativeSchema; schema <= MaxNativeSchema; schema++ {
		r := NewRegistry(Options{NativeHistograms: true, NativeSchema: schema})
		ref := prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ref", Buckets: DefaultBuckets,
			// client_golang picks the largest schema whose factor does not
			// exceed this one.
			NativeHistogramBucketFactor:  math.Exp2(math.Exp2(float64(-schema))) * (1 + 1e-9),
			NativeHistogramZeroThreshold: NativeZeroThreshold,
		})
		k := clientKey(200)
		values := []uint64{0, 1, 2, 3, 4, 5, 7, 8, 1000, 1024, 1 << 20, 1<<40 + 1, math.MaxUint32}
		for i := 0; i < 2000; i++ {
			values = append(values, uint64(math.Exp(rng.Float64()*20)))
		}
		for i, v := range values {
			r.RecordHTTP(uint32(i%3), &k, &HTTPObservation{DurationMs: v, HasDuration: true})
			ref.Observe(float64(v))
		}
		var want dto.Metric
		if err := ref.Write(&want); err != nil {
			t.Fatal(err)
		}
		body, _ := ContentFor(nil, protoAccept, r)
		fams := decodeProto(t, body)
		got := fams["istio_request_duration_milliseconds"].GetMetric()[0].GetHistogram()
		w := want.GetHistogram()
		if got.GetSchema() != w.GetSchema() || got.GetZeroCount() != w.GetZeroCount() || got.GetSampleCount() != w.GetSampleCount() ||
			got.GetSampleSum() != w.GetSampleSum() || got.GetZeroThreshold() != w.GetZeroThreshold() {
			t.Fatalf("schema %d: got schema %d zero %d count %d sum %v; client_golang schema %d zero %d count %d sum %v", schema,
				got.GetSchema(), got.GetZeroCount(), got.GetSampleCount(), got.GetSampleSum(), w.GetSchema(), w.GetZeroCount(), w.GetSampleCount(), w.GetSampleSum())
		}
		gs := &dto.Histogram{PositiveSpan: got.PositiveSpan, PositiveDelta: got.PositiveDelta}
		ws := &dto.Histogram{PositiveSpan: w.PositiveSpan, PositiveDelta: w.PositiveDelta}
		if !proto.Equal(gs, ws) {
			t.Fatalf("schema %d: buckets differ\n got %v\nwant %v", schema, gs, ws)
		}
	}
}

func TestProtoNegotiation(t *testing.T) {
	classic := NewRegistry(Options{})
	native := NewRegistry(Options{NativeHistograms: true, NativeSchema: 3})
	for _, r := range []*Registry{classic, native} {
		k := clientKey(200)
		r.RecordHTTP(0, &k, &HTTPObservation{DurationMs: 7, HasDuration: true})
	}
	cases := []struct {
		accept string
		regs   []*Registry
		proto  bool
	}{
		{"", []*Registry{native}, false},
		{"text/plain;version=0.0.4;q=0.5,*/*;q=0.1", []*Registry{native}, false},
		// Prometheus without the native-histograms flag asks for OpenMetrics
		// then text: it gets text.
		{"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", []*Registry{native}, false},
		{protoAccept, []*Registry{native}, true},
		{protoAccept, []*Registry{classic}, false}, // nothing native to serve
		{protoAccept, []*Registry{classic, native}, true},
	}
	for i, c := range cases {
		body, ct := ContentFor(nil, c.accept, c.regs...)
		if (ct == ProtoContentType) != c.proto {
			t.Errorf("case %d: content type %q", i, ct)
			continue
		}
		if !c.proto {
			parseExposition(t, body)
			continue
		}
		fams := decodeProto(t, body)
		ms := fams["istio_request_duration_milliseconds"].GetMetric()
		if len(ms) != len(c.regs) {
			t.Fatalf("case %d: %d metrics", i, len(ms))
		}
		for _, m := range ms {
			h := m.GetHistogram()
			if h.GetSampleCount() != 1 || h.GetSampleSum() != 7 {
				t.Errorf("case %d: %v", i, h)
			}
			if len(h.GetBucket()) == 0 && len(h.GetPositiveSpan()) == 0 {
				t.Errorf("case %d: neither classic nor native buckets", i)
			}
		}
		if fams["istio_requests_total"].GetMetric()[0].GetCounter().GetValue() != 1 || fams["leanmesh_series"] == nil {
			t.Errorf("case %d: counters or self metrics missing", i)
		}
		if fams["istio_build"] != nil {
			t.Errorf("case %d: istio_build is Istio's own (its TCP chains report it), leanmesh must not serve it", i)
		}
	}
}
