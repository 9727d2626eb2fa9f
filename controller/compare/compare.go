// Package compare checks that leanmesh reports the same metrics as Istio for
// the same traffic: given two Prometheus text expositions (Istio's, e.g. from
// a Shadow-mode proxy's merged endpoint, and leanmesh's from port 15095) it
// lists series present on one side only and values that differ beyond a
// tolerance. Histograms are compared by count, sum and every bucket.
//
// It compares only the families leanmesh owns in the proxy's mode (Owned):
// in both LeanMesh and Shadow mode that is the HTTP/gRPC families, since
// Istio's own filter keeps recording TCP; the rest of Istio's side is listed
// as Istio-only by design, never as missing. Shadow series carry the
// leanmesh_shadow_ prefix, which is stripped before matching.
package compare

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/filters/pluginconfig"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Options tune what is compared.
type Options struct {
	// Prefixes keep only families whose name starts with one of them
	// (default "istio_"): Envoy's own envoy_* stats have no leanmesh twin.
	Prefixes []string
	// IgnoreLabels are dropped before matching; series that then collide
	// are summed (e.g. ignore "pod" to compare per workload).
	IgnoreLabels []string
	// RelTolerance is the allowed |a-b| / max(|a|,|b|), e.g. 0.01 for 1%.
	RelTolerance float64
	// AbsTolerance is the allowed |a-b| regardless of magnitude.
	AbsTolerance float64
	// Mode is the proxy's leanmesh mode: ModeLeanMesh, ModeShadow, or
	// ModeAuto ("") to detect it from leanmesh's exposition (Shadow names
	// carry pluginconfig.ShadowMetricPrefix). ModeAll compares every family (no ownership).
	Mode Mode

	strip string // name prefix removed before matching (Shadow's side)
}

// Mode says which families leanmesh records for a proxy.
type Mode string

// The policy modes are the API's (v1alpha1.Mode); auto and all are only
// this comparison's.
const (
	ModeAuto     Mode = ""
	ModeLeanMesh      = Mode(v1alpha1.ModeLeanMesh)
	ModeShadow        = Mode(v1alpha1.ModeShadow)
	ModeAll      Mode = "all"
)

// httpFamilies are what leanmesh records in LeanMesh and Shadow mode: the
// HTTP connection manager's families (docs/telemetry.md).
var httpFamilies = []string{
	"istio_requests_total", "istio_request_duration_milliseconds", "istio_request_bytes",
	"istio_response_bytes", "istio_request_messages_total", "istio_response_messages_total",
}

// Owned returns the families leanmesh records in mode; nil means all
// (ModeAll). Both modes record the HTTP families; TCP stays Istio's.
// istio_build is Istio's in LeanMesh mode (its stats filter reports it from
// the TCP chains; leanmesh serves no copy), while Shadow serves a prefixed
// copy, compared like the rest.
func Owned(mode Mode) []string {
	switch mode {
	case ModeLeanMesh:
		return slices.Clone(httpFamilies)
	case ModeShadow:
		return append(slices.Clone(httpFamilies), "istio_build")
	}
	return nil
}

// Series identifies one series: family name plus sorted labels.
type Series struct {
	Family string
	Labels string // `a="x",b="y"`, sorted by name
}

func (s Series) String() string { return s.Family + "{" + s.Labels + "}" }

// Diff is a value mismatch; Field is "value", "count", "sum", `bucket le="…"`
// or "type".
type Diff struct {
	Series      Series
	Field       string
	Left, Right float64
	Note        string // for type and bucket-layout mismatches
}

// Report is the outcome; OK when nothing is missing and nothing differs.
type Report struct {
	Mode      Mode     // the mode compared for (detected if Options.Mode was auto)
	Compared  int      // series present on both sides
	OnlyLeft  []Series // missing on the right
	OnlyRight []Series // missing on the left
	Diffs     []Diff
	// IstioOnly are families of the left (Istio) side leanmesh does not
	// record in Mode, with their series counts: not compared, not errors.
	IstioOnly map[string]int
}

// OK reports a full match.
func (r *Report) OK() bool { return len(r.OnlyLeft) == 0 && len(r.OnlyRight) == 0 && len(r.Diffs) == 0 }

// Write prints the report; names label the two sides (e.g. istio, leanmesh).
func (r *Report) Write(w io.Writer, left, right string) {
	for _, s := range r.OnlyLeft {
		fmt.Fprintf(w, "missing in %s: %s\n", right, s)
	}
	for _, s := range r.OnlyRight {
		fmt.Fprintf(w, "missing in %s: %s\n", left, s)
	}
	for _, d := range r.Diffs {
		if d.Note != "" {
			fmt.Fprintf(w, "differs %s %s: %s\n", d.Series, d.Field, d.Note)
			continue
		}
		fmt.Fprintf(w, "differs %s %s: %s=%g %s=%g\n", d.Series, d.Field, left, d.Left, right, d.Right)
	}
	if len(r.IstioOnly) > 0 {
		names := make([]string, 0, len(r.IstioOnly))
		for n := range r.IstioOnly {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(w, "%s-only by design in %s mode: %s (%d series, not compared)\n", left, r.Mode, n, r.IstioOnly[n])
		}
	}
	verdict := "MATCH"
	if !r.OK() {
		verdict = "MISMATCH"
	}
	fmt.Fprintf(w, "%s (%s mode): %d series compared, %d only in %s, %d only in %s, %d value differences\n",
		verdict, r.Mode, r.Compared, len(r.OnlyLeft), left, len(r.OnlyRight), right, len(r.Diffs))
}

// sample is one series' value, aggregated over ignored labels.
type sample struct {
	histogram bool
	value     float64 // counter, gauge, untyped
	count     float64
	sum       float64
	buckets   map[float64]float64 // upper bound → cumulative count
}

// Parse reads a text exposition into series, applying opts' filters.
func Parse(r io.Reader, opts Options) (map[Series]*sample, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	prefixes := opts.Prefixes
	if len(prefixes) == 0 {
		prefixes = []string{"istio_"}
	}
	ignore := map[string]bool{}
	for _, l := range opts.IgnoreLabels {
		ignore[l] = true
	}
	out := map[Series]*sample{}
	for name, f := range fams {
		if opts.strip != "" {
			// Shadow's side: only the prefixed families are this mode's.
			// Unprefixed istio_* on a Shadow exposition are series an earlier
			// LeanMesh mode of the same proxy recorded (kept, flat); summed
			// in, they would fake a difference.
			var ok bool
			if name, ok = strings.CutPrefix(name, opts.strip); !ok {
				continue
			}
		}
		if !hasPrefix(name, prefixes) {
			continue
		}
		for _, m := range f.GetMetric() {
			key := Series{Family: name, Labels: labelKey(m.GetLabel(), ignore)}
			s := out[key]
			if s == nil {
				s = &sample{}
				out[key] = s
			}
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				h := m.GetHistogram()
				s.histogram = true
				s.count += float64(h.GetSampleCount())
				s.sum += h.GetSampleSum()
				if s.buckets == nil {
					s.buckets = map[float64]float64{}
				}
				for _, b := range h.GetBucket() {
					s.buckets[b.GetUpperBound()] += float64(b.GetCumulativeCount())
				}
			case dto.MetricType_COUNTER:
				s.value += m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				s.value += m.GetGauge().GetValue()
			case dto.MetricType_SUMMARY:
				s.count += float64(m.GetSummary().GetSampleCount())
				s.sum += m.GetSummary().GetSampleSum()
			default:
				s.value += m.GetUntyped().GetValue()
			}
		}
	}
	return out, nil
}

// Compare parses both expositions (left Istio's, right leanmesh's) and
// compares the families leanmesh owns in opts.Mode.
func Compare(left, right io.Reader, opts Options) (*Report, error) {
	rb, err := io.ReadAll(right)
	if err != nil {
		return nil, fmt.Errorf("right: %w", err)
	}
	mode := opts.Mode
	if mode == ModeAuto {
		mode = DetectMode(rb)
	}
	l, err := Parse(left, opts)
	if err != nil {
		return nil, fmt.Errorf("left: %w", err)
	}
	ropts := opts
	if mode == ModeShadow {
		ropts.strip = pluginconfig.ShadowMetricPrefix
	}
	r, err := Parse(bytes.NewReader(rb), ropts)
	if err != nil {
		return nil, fmt.Errorf("right: %w", err)
	}
	istioOnly := map[string]int{}
	if owned := Owned(mode); owned != nil {
		for k := range l {
			if !slices.Contains(owned, k.Family) {
				istioOnly[k.Family]++
				delete(l, k)
			}
		}
	}
	rep := CompareSeries(l, r, opts)
	rep.Mode, rep.IstioOnly = mode, istioOnly
	return rep, nil
}

// DetectMode tells Shadow from LeanMesh by leanmesh's exposition: Shadow
// names carry pluginconfig.ShadowMetricPrefix.
func DetectMode(leanmesh []byte) Mode {
	if bytes.Contains(leanmesh, []byte(pluginconfig.ShadowMetricPrefix+"istio_")) {
		return ModeShadow
	}
	return ModeLeanMesh
}

// CompareSeries compares parsed series.
func CompareSeries(l, r map[Series]*sample, opts Options) *Report {
	rep := &Report{}
	for k, ls := range l {
		rs, ok := r[k]
		if !ok {
			rep.OnlyLeft = append(rep.OnlyLeft, k)
			continue
		}
		rep.Compared++
		rep.Diffs = append(rep.Diffs, diffSample(k, ls, rs, opts)...)
	}
	for k := range r {
		if _, ok := l[k]; !ok {
			rep.OnlyRight = append(rep.OnlyRight, k)
		}
	}
	sortSeries(rep.OnlyLeft)
	sortSeries(rep.OnlyRight)
	sort.Slice(rep.Diffs, func(i, j int) bool {
		a, b := rep.Diffs[i], rep.Diffs[j]
		if a.Series != b.Series {
			return a.Series.String() < b.Series.String()
		}
		return a.Field < b.Field
	})
	return rep
}

func diffSample(k Series, l, r *sample, opts Options) []Diff {
	if l.histogram != r.histogram {
		return []Diff{{Series: k, Field: "type", Note: fmt.Sprintf("histogram on one side only (left %v, right %v)", l.histogram, r.histogram)}}
	}
	var out []Diff
	check := func(field string, a, b float64) {
		if !within(a, b, opts) {
			out = append(out, Diff{Series: k, Field: field, Left: a, Right: b})
		}
	}
	if !l.histogram {
		check("value", l.value, r.value)
		check("count", l.count, r.count)
		check("sum", l.sum, r.sum)
		return out
	}
	check("count", l.count, r.count)
	check("sum", l.sum, r.sum)
	bounds := map[float64]bool{}
	for b := range l.buckets {
		bounds[b] = true
	}
	for b := range r.buckets {
		bounds[b] = true
	}
	sorted := make([]float64, 0, len(bounds))
	for b := range bounds {
		sorted = append(sorted, b)
	}
	sort.Float64s(sorted)
	for _, b := range sorted {
		field := fmt.Sprintf("bucket le=%q", formatBound(b))
		lv, lok := l.buckets[b]
		rv, rok := r.buckets[b]
		if lok != rok {
			out = append(out, Diff{Series: k, Field: field, Note: fmt.Sprintf("bucket bound on one side only (left %v, right %v)", lok, rok)})
			continue
		}
		check(field, lv, rv)
	}
	return out
}

func within(a, b float64, opts Options) bool {
	if a == b || math.IsNaN(a) && math.IsNaN(b) {
		return true
	}
	d := math.Abs(a - b)
	return d <= opts.AbsTolerance || d <= opts.RelTolerance*math.Max(math.Abs(a), math.Abs(b))
}

func formatBound(b float64) string {
	if math.IsInf(b, 1) {
		return "+Inf"
	}
	return fmt.Sprintf("%g", b)
}

func hasPrefix(name string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func labelKey(labels []*dto.LabelPair, ignore map[string]bool) string {
	pairs := make([]string, 0, len(labels))
	for _, lp := range labels {
		if ignore[lp.GetName()] {
			continue
		}
		pairs = append(pairs, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
	}
	sort.Strings(pairs)
	return strings.Join(pairs, ",")
}

func sortSeries(s []Series) {
	sort.Slice(s, func(i, j int) bool { return s[i].String() < s[j].String() })
}
