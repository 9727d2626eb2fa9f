package telemetry

import (
	"bytes"
	"runtime/metrics"
	"strconv"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
)

// ContentType is the Prometheus text exposition format served at scrape time.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// AppendText appends the exposition of this registry alone.
func (r *Registry) AppendText(buf []byte) []byte { return AppendText(buf, r) }

// AppendText appends the whole exposition of regs in the Prometheus text
// format, each family once. The large Istio families are written directly
// from pre-rendered label blocks (expfmt's MetricFamily path costs ~40x at
// 100k series, see BenchmarkExpositionExpfmt); the small families
// (istio_build, leanmesh_*) go through expfmt. Creating new series waits
// while this runs; recording into existing series does not.
func AppendText(buf []byte, regs ...*Registry) []byte {
	for _, r := range regs {
		r.mu.Lock()
	}
	for m := Metric(0); m < numMetrics; m++ {
		header := false
		for _, r := range regs {
			if r.opts.Overrides.Dropped(m) || len(r.family[m].list) == 0 {
				continue
			}
			if !header {
				buf = appendTypeLine(buf, m)
				header = true
			}
			buf = r.appendFamily(buf, m)
		}
	}
	for _, r := range regs {
		r.mu.Unlock()
	}
	return appendSmallFamilies(buf, regs)
}

func appendTypeLine(buf []byte, m Metric) []byte {
	spec := metricSpecs[m]
	buf = append(buf, "# TYPE "...)
	buf = append(buf, spec.Name...)
	if spec.Kind == KindCounter {
		return append(buf, " counter\n"...)
	}
	return append(buf, " histogram\n"...)
}

func (r *Registry) appendFamily(buf []byte, m Metric) []byte {
	t := r.family[m]
	spec := metricSpecs[m]
	if spec.Kind == KindCounter {
		idx := slot[m]
		for _, ls := range t.list {
			var v uint64
			for _, s := range ls.members {
				v += s.counters[idx].Load()
			}
			buf = append(buf, spec.Name...)
			buf = appendLabels(buf, ls.text)
			buf = append(buf, ' ')
			buf = strconv.AppendUint(buf, v, 10)
			buf = append(buf, '\n')
		}
		return buf
	}
	idx := slot[m]
	les := r.leValues()
	counts := make([]uint64, len(r.buckets)+1)
	for _, ls := range t.list {
		clear(counts)
		var sum uint64
		for _, s := range ls.members {
			h := &s.hists[idx]
			if h.counts == nil {
				continue
			}
			for i := range counts {
				counts[i] += h.counts[i].Load()
			}
			sum += h.sum.Load()
		}
		var cum uint64
		for i, le := range les {
			cum += counts[i]
			buf = append(buf, spec.Name...)
			buf = append(buf, "_bucket"...)
			buf = appendLabelsWith(buf, ls.text, le)
			buf = append(buf, ' ')
			buf = strconv.AppendUint(buf, cum, 10)
			buf = append(buf, '\n')
		}
		buf = append(buf, spec.Name...)
		buf = append(buf, "_sum"...)
		buf = appendLabels(buf, ls.text)
		buf = append(buf, ' ')
		buf = strconv.AppendUint(buf, sum, 10)
		buf = append(buf, '\n')
		buf = append(buf, spec.Name...)
		buf = append(buf, "_count"...)
		buf = appendLabels(buf, ls.text)
		buf = append(buf, ' ')
		buf = strconv.AppendUint(buf, cum, 10)
		buf = append(buf, '\n')
	}
	return buf
}

var heapSample = []metrics.Sample{{Name: "/gc/heap/live:bytes"}}

func liveHeap() float64 {
	s := make([]metrics.Sample, 1)
	copy(s, heapSample)
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return float64(s[0].Value.Uint64())
}

// leValues returns the `le="..."` label of each bucket, +Inf last.
func (r *Registry) leValues() []string {
	out := make([]string, 0, len(r.buckets)+1)
	for _, b := range r.buckets {
		out = append(out, `le="`+strconv.FormatFloat(b, 'g', -1, 64)+`"`)
	}
	return append(out, `le="+Inf"`)
}

func appendLabels(buf []byte, text string) []byte {
	if text == "{}" {
		return buf
	}
	return append(buf, text...)
}

func appendLabelsWith(buf []byte, text, extra string) []byte {
	if text == "{}" {
		buf = append(buf, '{')
	} else {
		buf = append(buf, text[:len(text)-1]...)
		buf = append(buf, ',')
	}
	buf = append(buf, extra...)
	return append(buf, '}')
}

// appendSmallFamilies writes istio_build and the self metrics with expfmt.
func appendSmallFamilies(buf []byte, regs []*Registry) []byte {
	var fams []*dto.MetricFamily
	tag := unknown
	var series int
	var overflowed uint64
	for _, r := range regs {
		if v := r.istioVersion.Load(); v != nil && *v != "" && tag == unknown {
			tag = *v
		}
		series += r.Series()
		overflowed += r.Overflowed()
	}
	fams = append(fams, &dto.MetricFamily{
		Name: proto.String(BuildMetricName), Type: dto.MetricType_GAUGE.Enum(),
		Metric: []*dto.Metric{{
			Label: []*dto.LabelPair{{Name: proto.String("component"), Value: proto.String("proxy")}, {Name: proto.String("tag"), Value: proto.String(tag)}},
			Gauge: &dto.Gauge{Value: proto.Float64(1)},
		}},
	})
	gauge := func(name, help string, v float64) {
		fams = append(fams, &dto.MetricFamily{Name: proto.String(name), Help: proto.String(help), Type: dto.MetricType_GAUGE.Enum(),
			Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: proto.Float64(v)}}}})
	}
	gauge("leanmesh_series", "Series held by the registry (label sets per worker), excluding overflow.", float64(series))
	gauge("leanmesh_go_heap_live_bytes", "Live heap of the library's Go runtime after the last GC.", liveHeap())
	samples := Self.snapshot()
	samples = append(samples, selfSample{selfKey{"leanmesh_series_overflow_records_total", "", ""}, overflowed})
	var cur *dto.MetricFamily
	for _, s := range samples {
		if cur == nil || cur.GetName() != s.name {
			cur = &dto.MetricFamily{Name: proto.String(s.name), Type: dto.MetricType_COUNTER.Enum()}
			fams = append(fams, cur)
		}
		m := &dto.Metric{Counter: &dto.Counter{Value: proto.Float64(float64(s.value))}}
		if s.label != "" {
			m.Label = []*dto.LabelPair{{Name: proto.String(s.label), Value: proto.String(s.labelValue)}}
		}
		cur.Metric = append(cur.Metric, m)
	}
	var b bytes.Buffer
	for _, f := range fams {
		// Only fails on invalid families, which the code above cannot build.
		_, _ = expfmt.MetricFamilyToText(&b, f)
	}
	return append(buf, b.Bytes()...)
}
