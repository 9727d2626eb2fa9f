package telemetry

import (
	"fmt"
	"sort"
	"strings"
)

// Overrides is the compiled form of Istio's stats.PluginConfig metric
// customisations: dropped families, removed labels and custom dimensions.
// A dimension's value is computed by the filter from one of Expressions (the
// distinct expressions of all dimensions), and carried in Key.Extra.
type Overrides struct {
	Expressions []string
	dropped     [numMetrics]bool
	// per family: standard labels removed, and dimensions (name → expression index)
	removed    [numMetrics]map[Label]bool
	dimensions [numMetrics]map[string]int
}

// MetricOverride is one entry of the config's metrics list; Name "" applies to
// every family.
type MetricOverride struct {
	Name         string
	Drop         bool
	TagsToRemove []string
	Dimensions   map[string]string // label name → expression
}

// CompileOverrides validates and compiles overrides; errors name the entry.
func CompileOverrides(list []MetricOverride) (*Overrides, error) {
	o := &Overrides{}
	exprIndex := map[string]int{}
	for i, mo := range list {
		var targets []Metric
		if mo.Name == "" {
			for m := Metric(0); m < numMetrics; m++ {
				targets = append(targets, m)
			}
		} else {
			m, ok := MetricByShortName(mo.Name)
			if !ok {
				return nil, fmt.Errorf("metrics[%d].name: unknown metric %q", i, mo.Name)
			}
			targets = []Metric{m}
		}
		for _, tag := range mo.TagsToRemove {
			if _, ok := LabelByName(tag); !ok {
				return nil, fmt.Errorf("metrics[%d].tags_to_remove: %q is not a standard Istio label", i, tag)
			}
		}
		dimNames := make([]string, 0, len(mo.Dimensions))
		for name := range mo.Dimensions {
			if !validLabelName(name) {
				return nil, fmt.Errorf("metrics[%d].dimensions: %q is not a valid Prometheus label name", i, name)
			}
			if reservedLabelNames[name] {
				return nil, fmt.Errorf("metrics[%d].dimensions: %q is reserved: the exposition writes it itself", i, name)
			}
			if strings.TrimSpace(mo.Dimensions[name]) == "" {
				return nil, fmt.Errorf("metrics[%d].dimensions[%s]: empty expression", i, name)
			}
			dimNames = append(dimNames, name)
		}
		sort.Strings(dimNames)
		for _, m := range targets {
			if mo.Drop {
				o.dropped[m] = true
			}
			for _, tag := range mo.TagsToRemove {
				l, _ := LabelByName(tag)
				if o.removed[m] == nil {
					o.removed[m] = map[Label]bool{}
				}
				o.removed[m][l] = true
			}
			for _, name := range dimNames {
				expr := mo.Dimensions[name]
				idx, ok := exprIndex[expr]
				if !ok {
					idx = len(o.Expressions)
					exprIndex[expr] = idx
					o.Expressions = append(o.Expressions, expr)
				}
				if o.dimensions[m] == nil {
					o.dimensions[m] = map[string]int{}
				}
				o.dimensions[m][name] = idx
			}
		}
	}
	return o, nil
}

// Dropped reports whether family m is not exported.
func (o *Overrides) Dropped(m Metric) bool { return o != nil && o.dropped[m] }

// reservedLabelNames are labels the exposition adds (le on histogram
// buckets) or Prometheus' exposition formats reserve (quantile on summaries),
// so a dimension of that name would make duplicate labels on a line.
var reservedLabelNames = map[string]bool{"le": true, "quantile": true}

func validLabelName(s string) bool {
	if s == "" || strings.HasPrefix(s, "__") {
		return false
	}
	for i, c := range s {
		legal := c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9'
		if !legal {
			return false
		}
	}
	return true
}

// layout is the label list one family renders: standard labels (possibly
// with a value taken from a custom dimension) then added dimensions.
type layout struct {
	cols []column
}

type column struct {
	name     string
	std      Label // standard label, or NumLabels for an added dimension
	extraIdx int   // >=0: value from Key.Extra[extraIdx]
}

func (o *Overrides) layoutFor(m Metric) layout {
	spec := metricSpecs[m]
	var lay layout
	var dims map[string]int
	if o != nil {
		dims = o.dimensions[m]
	}
	used := map[string]bool{}
	for _, l := range spec.Labels {
		if o != nil && o.removed[m][l] {
			continue
		}
		c := column{name: l.String(), std: l, extraIdx: -1}
		if idx, ok := dims[c.name]; ok {
			c.extraIdx = idx
			used[c.name] = true
		}
		lay.cols = append(lay.cols, c)
	}
	names := make([]string, 0, len(dims))
	for name := range dims {
		if !used[name] {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		lay.cols = append(lay.cols, column{name: name, std: NumLabels, extraIdx: dims[name]})
	}
	return lay
}

// Column is one label of a family as it is exported: a standard label whose
// value the filter computes (Expr ""), or one whose value a dimension
// expression gives.
type Column struct {
	Name string
	Expr string
}

// Columns lists the labels family m is exported with, in order, after
// overrides; nil when m is dropped. It is the effective per-metric definition
// (what Istio's stats filter builds from stats.PluginConfig), for checks that
// compare a config's outcome rather than its spelling.
func (o *Overrides) Columns(m Metric) []Column {
	if o.Dropped(m) {
		return nil
	}
	lay := o.layoutFor(m)
	cols := make([]Column, len(lay.cols))
	for i, c := range lay.cols {
		cols[i] = Column{Name: c.name}
		if c.extraIdx >= 0 {
			cols[i].Expr = o.Expressions[c.extraIdx]
		}
	}
	return cols
}

func (l layout) equal(o layout) bool {
	if len(l.cols) != len(o.cols) {
		return false
	}
	for i := range l.cols {
		if l.cols[i] != o.cols[i] {
			return false
		}
	}
	return true
}

// render writes the label block `{a="x",b="y"}` for the given values.
// Values longer than maxLen bytes are cut.
func (l layout) render(buf []byte, std *[NumLabels]string, extra []string, maxLen int) []byte {
	buf = append(buf, '{')
	for i, c := range l.cols {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, c.name...)
		buf = append(buf, '=', '"')
		var v string
		switch {
		case c.extraIdx >= 0:
			if c.extraIdx < len(extra) {
				v = extra[c.extraIdx]
			}
		default:
			v = std[c.std]
		}
		buf = appendEscaped(buf, cut(v, maxLen))
		buf = append(buf, '"')
	}
	return append(buf, '}')
}

// SplitExtra splits Key.Extra into values.
func SplitExtra(extra string, n int) []string {
	if n == 0 {
		return nil
	}
	out := strings.SplitN(extra, "\x00", n)
	for len(out) < n {
		out = append(out, "")
	}
	return out
}

// JoinExtra builds Key.Extra from values.
func JoinExtra(values []string) string { return strings.Join(values, "\x00") }
