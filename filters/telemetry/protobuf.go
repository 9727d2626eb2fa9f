package telemetry

import (
	"bytes"
	"net/http"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
)

// The protobuf exposition (Prometheus' delimited io.prometheus.client.MetricFamily
// stream, the format a Prometheus with native histograms enabled asks for
// first). It exists for native histograms: a registry with them on sends
// its histograms as native ones there; the others send classic buckets. The
// text exposition is unchanged and stays the default.

// ProtoContentType is the Content-Type of the protobuf exposition.
var ProtoContentType = string(expfmt.NewFormat(expfmt.TypeProtoDelim))

// WantsProto applies Prometheus' content negotiation (expfmt.Negotiate) to
// a scrape's Accept header.
func WantsProto(accept string) bool {
	if accept == "" || !strings.Contains(accept, "application/vnd.google.protobuf") {
		return false
	}
	return expfmt.Negotiate(http.Header{"Accept": {accept}}).FormatType() == expfmt.TypeProtoDelim
}

// AppendProto appends the exposition of regs in the delimited protobuf
// format, each family once. Each registry's label sets stop once their
// estimated text size reaches its MaxExpositionBytes, as in AppendText.
func AppendProto(buf []byte, regs ...*Registry) []byte {
	sns := snapshots(regs)
	spent := make([]int64, len(sns))
	w := bytes.NewBuffer(buf)
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeProtoDelim))
	for _, prefix := range prefixes(regs) {
		for m := Metric(0); m < numMetrics; m++ {
			appendProtoFamily(enc, sns, spent, prefix, m)
		}
	}
	for _, f := range smallFamilies(regs) {
		_ = enc.Encode(f)
	}
	return w.Bytes()
}

// appendProtoFamily encodes family m of the registries with name prefix.
func appendProtoFamily(enc expfmt.Encoder, sns []snapshot, spent []int64, prefix string, m Metric) {
	spec := metricSpecs[m]
	fam := &dto.MetricFamily{Name: proto.String(prefix + spec.Name), Type: dto.MetricType_COUNTER.Enum()}
	if spec.Kind == KindHistogram {
		fam.Type = dto.MetricType_HISTOGRAM.Enum()
	}
	for i, sn := range sns {
		r := sn.r
		if r.opts.NamePrefix != prefix || r.opts.Overrides.Dropped(m) {
			continue
		}
		for _, ss := range sn.sets[r.family[m]] {
			if spent[i] >= int64(r.opts.MaxExpositionBytes) {
				selfTruncatedScrapes.Add(1)
				break
			}
			spent[i] += ss.ls.expCost / int64(max(1, len(ss.ls.tab.metrics)))
			fam.Metric = append(fam.Metric, r.protoMetric(m, ss))
		}
	}
	if len(fam.Metric) > 0 {
		// Only fails on invalid families, which the code above cannot build.
		_ = enc.Encode(fam)
	}
}

func (r *Registry) protoMetric(m Metric, ss setSnap) *dto.Metric {
	out := &dto.Metric{Label: parseLabelBlock(ss.ls.text)}
	idx := slot[m]
	if metricSpecs[m].Kind == KindCounter {
		var v uint64
		for _, s := range ss.members {
			v += s.counters[idx].Load()
		}
		out.Counter = &dto.Counter{Value: proto.Float64(float64(v))}
		return out
	}
	h := &dto.Histogram{}
	counts := make([]uint64, len(r.buckets)+1)
	var sum, zero uint64
	var dense []uint64
	if r.native.enabled {
		dense = make([]uint64, r.native.nChunks<<r.native.chunkBits)
	}
	for _, s := range ss.members {
		hs := &s.hists[idx]
		if hs.counts == nil {
			continue
		}
		for i := range counts {
			counts[i] += hs.counts[i].Load()
		}
		sum += hs.sum.Load()
		if hs.native != nil {
			zero += hs.native.addTo(&r.native, dense)
		}
	}
	var total uint64
	for _, c := range counts {
		total += c
	}
	h.SampleCount = proto.Uint64(total)
	h.SampleSum = proto.Float64(float64(sum))
	if !r.native.enabled {
		var cum uint64
		for i, b := range r.buckets {
			cum += counts[i]
			h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: proto.Float64(b), CumulativeCount: proto.Uint64(cum)})
		}
		out.Histogram = h
		return out
	}
	h.Schema = proto.Int32(int32(r.native.schema))
	h.ZeroThreshold = proto.Float64(NativeZeroThreshold)
	h.ZeroCount = proto.Uint64(zero)
	spans, deltas := nativeSpans(dense)
	for _, sp := range spans {
		h.PositiveSpan = append(h.PositiveSpan, &dto.BucketSpan{Offset: proto.Int32(sp.offset), Length: proto.Uint32(sp.length)})
	}
	h.PositiveDelta = deltas
	out.Histogram = h
	return out
}

// parseLabelBlock reads back a block layout.render wrote: `{a="x",b="y"}`
// with \\, \" and \n escaped.
func parseLabelBlock(text string) []*dto.LabelPair {
	var out []*dto.LabelPair
	s := text[1 : len(text)-1]
	for len(s) > 0 {
		eq := strings.IndexByte(s, '=')
		name := s[:eq]
		s = s[eq+2:] // skip ="
		var v []byte
		i := 0
		for ; s[i] != '"'; i++ {
			if s[i] == '\\' {
				i++
				if s[i] == 'n' {
					v = append(v, '\n')
					continue
				}
			}
			v = append(v, s[i])
		}
		out = append(out, &dto.LabelPair{Name: proto.String(name), Value: proto.String(string(v))})
		s = s[i+1:]
		if len(s) > 0 && s[0] == ',' {
			s = s[1:]
		}
	}
	return out
}

// ContentFor returns the exposition of regs for a scrape's Accept header:
// protobuf when the scraper prefers it and a registry has native histograms
// (the only thing protobuf adds), the text format otherwise.
func ContentFor(buf []byte, accept string, regs ...*Registry) ([]byte, string) {
	if WantsProto(accept) {
		for _, r := range regs {
			if r.native.enabled {
				return AppendProto(buf, regs...), ProtoContentType
			}
		}
	}
	return AppendText(buf, regs...), ContentType
}
