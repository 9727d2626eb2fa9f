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

// snapshot is what one scrape reads of a registry: the label sets of each
// table with their members at the start of the scrape. Taking it holds the
// registry mutex for a copy of the lists only; the rendering runs without
// it, reading counters atomically, so creating a series never waits for a
// render.
type snapshot struct {
	r    *Registry
	sets map[*table][]setSnap
}

type setSnap struct {
	ls      *labelSet
	members []*series
}

func (r *Registry) snapshot() snapshot {
	r.markScraped()
	sn := snapshot{r: r, sets: make(map[*table][]setSnap, len(r.tables))}
	r.mu.Lock()
	for _, t := range r.tables {
		sets := make([]setSnap, 0, len(t.list)-t.dead)
		for _, ls := range t.list {
			if len(ls.members) > 0 {
				sets = append(sets, setSnap{ls, ls.members})
			}
		}
		sn.sets[t] = sets
	}
	r.mu.Unlock()
	return sn
}

func snapshots(regs []*Registry) []snapshot {
	out := make([]snapshot, len(regs))
	for i, r := range regs {
		out[i] = r.snapshot()
	}
	return out
}

// AppendText appends the whole exposition of regs in the Prometheus text
// format, each family once. The large Istio families are written directly
// from pre-rendered label blocks (expfmt's MetricFamily path costs ~40x at
// 100k series, see BenchmarkExpositionExpfmt); the small families
// (leanmesh_*, Shadow's istio_build) go through expfmt. Each registry's lines stop at
// a label-set boundary once they reach its MaxExpositionBytes (counted in
// leanmesh_exposition_truncated_total); the creation-time budget normally
// keeps them below it.
func AppendText(buf []byte, regs ...*Registry) []byte {
	sns := snapshots(regs)
	written := make([]int, len(sns))
	for _, prefix := range prefixes(regs) {
		for m := Metric(0); m < numMetrics; m++ {
			header := false
			for i, sn := range sns {
				r := sn.r
				sets := sn.sets[r.family[m]]
				if r.opts.NamePrefix != prefix || r.opts.Overrides.Dropped(m) || len(sets) == 0 {
					continue
				}
				if !header {
					buf = appendTypeLine(buf, prefix, m)
					header = true
				}
				start := len(buf)
				buf = r.appendFamily(buf, m, sets, r.opts.MaxExpositionBytes-written[i])
				written[i] += len(buf) - start
			}
		}
	}
	return appendSmallFamilies(buf, regs)
}

// prefixes are the distinct family-name prefixes of regs (Options.NamePrefix),
// in order: each prefix's families are written as families of their own.
func prefixes(regs []*Registry) []string {
	var out []string
	for _, r := range regs {
		seen := false
		for _, p := range out {
			seen = seen || p == r.opts.NamePrefix
		}
		if !seen {
			out = append(out, r.opts.NamePrefix)
		}
	}
	return out
}

var selfTruncatedScrapes = Self.Counter("leanmesh_exposition_truncated_total", "", "")

func appendTypeLine(buf []byte, prefix string, m Metric) []byte {
	spec := metricSpecs[m]
	buf = append(buf, "# TYPE "...)
	buf = append(buf, prefix...)
	buf = append(buf, spec.Name...)
	if spec.Kind == KindCounter {
		return append(buf, " counter\n"...)
	}
	return append(buf, " histogram\n"...)
}

func (r *Registry) appendFamily(buf []byte, m Metric, sets []setSnap, budget int) []byte {
	start := len(buf)
	spec := metricSpecs[m]
	spec.Name = r.opts.NamePrefix + spec.Name
	idx := slot[m]
	if spec.Kind == KindCounter {
		for _, ss := range sets {
			if len(buf)-start >= budget {
				selfTruncatedScrapes.Add(1)
				break
			}
			var v uint64
			for _, s := range ss.members {
				v += s.counters[idx].Load()
			}
			buf = append(buf, spec.Name...)
			buf = appendLabels(buf, ss.ls.text)
			buf = append(buf, ' ')
			buf = strconv.AppendUint(buf, v, 10)
			buf = append(buf, '\n')
		}
		return buf
	}
	les := r.leValues()
	counts := make([]uint64, len(r.buckets)+1)
	for _, ss := range sets {
		if len(buf)-start >= budget {
			selfTruncatedScrapes.Add(1)
			break
		}
		text := ss.ls.text
		clear(counts)
		var sum uint64
		for _, s := range ss.members {
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
			buf = appendLabelsWith(buf, text, le)
			buf = append(buf, ' ')
			buf = strconv.AppendUint(buf, cum, 10)
			buf = append(buf, '\n')
		}
		buf = append(buf, spec.Name...)
		buf = append(buf, "_sum"...)
		buf = appendLabels(buf, text)
		buf = append(buf, ' ')
		buf = strconv.AppendUint(buf, sum, 10)
		buf = append(buf, '\n')
		buf = append(buf, spec.Name...)
		buf = append(buf, "_count"...)
		buf = appendLabels(buf, text)
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

func formatBound(b float64) string { return strconv.FormatFloat(b, 'g', -1, 64) }

// leValues returns the `le="..."` label of each bucket, +Inf last.
func (r *Registry) leValues() []string {
	out := make([]string, 0, len(r.buckets)+1)
	for _, b := range r.buckets {
		out = append(out, `le="`+formatBound(b)+`"`)
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

// smallFamilies builds the self metrics and, in Shadow mode, the prefixed
// istio_build.
func smallFamilies(regs []*Registry) []*dto.MetricFamily {
	var fams []*dto.MetricFamily
	var series int
	var overflowed, overBudget, evicted uint64
	var mem, exp, hold int64
	var peers int
	for _, r := range regs {
		peers += r.Peers()
		hold = max(hold, r.maxHold.Load())
		series += r.Series()
		overflowed += r.Overflowed()
		overBudget += r.OverBudget()
		evicted += r.Evicted()
		m, e := r.Usage()
		mem += m
		exp += e
	}
	// istio_build only under a name prefix (Shadow's leanmesh_shadow_), never
	// under Istio's own name: Istio's stats filter sets that gauge when any
	// istio.stats config is built, HTTP or network (istio_stats.cc,
	// Config::Config → recordVersion, shared by both factories), and
	// istio.stats stays on the TCP chains in every mode, so the proxy already
	// reports it on :15020 and a second copy here would double every
	// sum/count of istio_build. The tag is the proxy's ISTIO_VERSION, else
	// "unknown", as recordVersion reports it.
	for _, prefix := range prefixes(regs) {
		if prefix == "" {
			continue
		}
		tag := unknown
		for _, r := range regs {
			if v := r.istioVersion.Load(); r.opts.NamePrefix == prefix && v != nil && *v != "" && tag == unknown {
				tag = *v
			}
		}
		fams = append(fams, &dto.MetricFamily{
			Name: proto.String(prefix + BuildMetricName), Type: dto.MetricType_GAUGE.Enum(),
			Metric: []*dto.Metric{{
				Label: []*dto.LabelPair{{Name: proto.String("component"), Value: proto.String("proxy")}, {Name: proto.String("tag"), Value: proto.String(tag)}},
				Gauge: &dto.Gauge{Value: proto.Float64(1)},
			}},
		})
	}
	gauge := func(name, help string, v float64) {
		fams = append(fams, &dto.MetricFamily{Name: proto.String(name), Help: proto.String(help), Type: dto.MetricType_GAUGE.Enum(),
			Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: proto.Float64(v)}}}})
	}
	gauge("leanmesh_series", "Series held by the registry (label sets per worker), excluding overflow.", float64(series))
	gauge("leanmesh_series_bytes", "Estimated registry memory of series and label blocks (bounded by max_series_bytes).", float64(mem))
	gauge("leanmesh_exposition_bytes_estimate", "Upper bound of the Istio families' exposition (bounded by max_exposition_bytes).", float64(exp))
	gauge("leanmesh_eviction_max_shard_lock_hold_seconds", "Longest time an eviction sweep held a shard mutex the request path takes.", float64(hold)/1e9)
	gauge("leanmesh_interned_peers", "Peer identities interned by the registries (released with the series and peer caches that used them).", float64(peers))
	gauge("leanmesh_go_heap_live_bytes", "Live heap of the library's Go runtime after the last GC.", liveHeap())
	samples := Self.snapshot()
	samples = append(samples,
		selfSample{selfKey{"leanmesh_series_evicted_total", "", ""}, evicted},
		selfSample{selfKey{"leanmesh_series_overflow_budget_total", "", ""}, overBudget},
		selfSample{selfKey{"leanmesh_series_overflow_records_total", "", ""}, overflowed})
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
	return fams
}

// appendSmallFamilies writes the small families with expfmt.
func appendSmallFamilies(buf []byte, regs []*Registry) []byte {
	var b bytes.Buffer
	for _, f := range smallFamilies(regs) {
		// Only fails on invalid families, which the code above cannot build.
		_, _ = expfmt.MetricFamilyToText(&b, f)
	}
	return append(buf, b.Bytes()...)
}
