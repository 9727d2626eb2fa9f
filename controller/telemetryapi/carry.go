package telemetryapi

import (
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"

	telemetryapi "istio.io/api/telemetry/v1alpha1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/filters/telemetry"
)

// istioMetric maps Telemetry's metric enum to leanmesh's short names
// (filters/telemetry/metrics.go); ALL_METRICS is "" (every metric).
var istioMetric = map[telemetryapi.MetricSelector_IstioMetric]string{
	telemetryapi.MetricSelector_ALL_METRICS:            "",
	telemetryapi.MetricSelector_REQUEST_COUNT:          "requests_total",
	telemetryapi.MetricSelector_REQUEST_DURATION:       "request_duration_milliseconds",
	telemetryapi.MetricSelector_REQUEST_SIZE:           "request_bytes",
	telemetryapi.MetricSelector_RESPONSE_SIZE:          "response_bytes",
	telemetryapi.MetricSelector_TCP_OPENED_CONNECTIONS: "tcp_connections_opened_total",
	telemetryapi.MetricSelector_TCP_CLOSED_CONNECTIONS: "tcp_connections_closed_total",
	telemetryapi.MetricSelector_TCP_SENT_BYTES:         "tcp_sent_bytes_total",
	telemetryapi.MetricSelector_TCP_RECEIVED_BYTES:     "tcp_received_bytes_total",
	telemetryapi.MetricSelector_GRPC_REQUEST_MESSAGES:  "request_messages_total",
	telemetryapi.MetricSelector_GRPC_RESPONSE_MESSAGES: "response_messages_total",
}

// istioMetrics is Telemetry's metric enum in its own order: the order merged
// overrides are written in.
var istioMetrics = func() []telemetryapi.MetricSelector_IstioMetric {
	var ms []telemetryapi.MetricSelector_IstioMetric
	for m := range istioMetric {
		if m != telemetryapi.MetricSelector_ALL_METRICS {
			ms = append(ms, m)
		}
	}
	slices.Sort(ms)
	return ms
}()

// meshDefaultProviders is what a metrics entry without providers inherits
// when no earlier entry names any: Istio's install sets
// meshConfig.defaultProviders.metrics to [prometheus] (the controller does not
// read the mesh config).
var meshDefaultProviders = []string{"prometheus"}

// Result is what a policy takes over from the Telemetries in its scope.
type Result struct {
	// Overrides is Istio's merged outcome of the carried Telemetries
	// (root namespace first, then the policy's namespace): per metric, dropped
	// or the labels removed and added. The policy's own spec.metrics go after
	// them.
	Overrides []v1alpha1.MetricOverride
	// From names the Telemetries carried ("ns/name").
	From []string
	// NotCarried says, per item, what was left out and why.
	NotCarried []string
}

// CarryOver reads the namespace-wide Telemetries (no selector, no
// targetRefs) that apply to a policy's pods the way Istio's
// pilot/pkg/model/telemetry.go does (applicableTelemetries, mergeMetrics):
// the root namespace's, then the namespace's, the oldest one per namespace
// whatever it configures; only the Prometheus provider's metrics settings
// are taken.
//
// Overrides are merged as istiod merges them, not appended: per metric, a
// later disabled value replaces an earlier one and a later tag operation
// replaces an earlier one of the same tag; disabling ALL_METRICS drops
// everything until any later override touches a metric again (istiod's
// "root disables all, a namespace enables"); and when the last metrics
// entry naming providers leaves Prometheus out, Istio configures no stats
// filter at all, which is carried as every metric dropped.
//
// A root-namespace policy renders one config for the whole mesh, so a
// namespace's own Telemetry cannot be carried by it: reported, with the
// way out (a namespace policy).
func CarryOver(policyNS, root string, tels []*telemetryv1.Telemetry) Result {
	var res Result
	byNS := map[string]*telemetryv1.Telemetry{}
	for _, t := range tels {
		if t.Labels[v1alpha1.LabelManagedBy] == v1alpha1.ManagedBy || !t.DeletionTimestamp.IsZero() {
			continue
		}
		if len(t.Spec.GetSelector().GetMatchLabels()) > 0 || len(t.Spec.GetTargetRefs()) > 0 || t.Spec.GetTargetRef() != nil {
			continue // workload-level: the validation chain's TelemetryConflict
		}
		// Istio's namespaceWideTelemetryConfig takes the oldest, even when
		// it configures only tracing or logging: a newer one's metrics are
		// then ignored.
		if cur := byNS[t.Namespace]; cur == nil || older(t, cur) {
			byNS[t.Namespace] = t
		}
	}
	order := []string{root}
	if policyNS != root {
		order = append(order, policyNS)
	} else {
		var others []string
		for ns, t := range byNS {
			if ns != root && len(t.Spec.GetMetrics()) > 0 {
				others = append(others, ns)
			}
		}
		sort.Strings(others)
		for _, ns := range others {
			t := byNS[ns]
			res.NotCarried = append(res.NotCarried, fmt.Sprintf("Telemetry %s/%s: a mesh-wide policy renders one config for every namespace; write a policy in %s to carry its metric overrides", t.Namespace, t.Name, ns))
		}
	}
	var scoped []*telemetryv1.Telemetry
	for _, ns := range order {
		if t := byNS[ns]; t != nil {
			scoped = append(scoped, t)
		}
	}

	// The providers configured are those of the last metrics entry naming
	// any (mergeMetrics' inScopeProviders).
	inScope, setBy := meshDefaultProviders, ""
	for _, t := range scoped {
		for _, m := range t.Spec.GetMetrics() {
			if names := providerNames(m.GetProviders()); len(names) > 0 {
				inScope, setBy = names, t.Namespace+"/"+t.Name
			}
		}
	}
	if !forPrometheus(inScope) {
		res.Overrides = []v1alpha1.MetricOverride{{Drop: true}}
		res.From = append(res.From, setBy)
		return res
	}

	mg := &merge{metrics: map[telemetryapi.MetricSelector_IstioMetric]*metricState{}}
	parent := meshDefaultProviders
	for _, t := range scoped {
		name := t.Namespace + "/" + t.Name
		carried := false
		for i, m := range t.Spec.GetMetrics() {
			// An entry without providers inherits the previous entry's.
			ps := providerNames(m.GetProviders())
			if len(ps) == 0 {
				ps = parent
			}
			parent = ps
			if !forPrometheus(ps) {
				continue
			}
			if m.GetReportingInterval() != nil {
				res.NotCarried = append(res.NotCarried, fmt.Sprintf("Telemetry %s metrics[%d].reportingInterval: leanmesh reports HTTP at stream end and TCP on its own tcpReportingDuration", name, i))
			}
			for j, o := range m.GetOverrides() {
				where := fmt.Sprintf("Telemetry %s metrics[%d].overrides[%d]", name, i, j)
				applied, note := mg.apply(o)
				if note != "" {
					res.NotCarried = append(res.NotCarried, where+": "+note)
				}
				if applied {
					mg.where(o, where)
					carried = true
				}
			}
		}
		if carried {
			res.From = append(res.From, name)
		}
	}
	overrides, notes := mg.result()
	res.Overrides = overrides
	res.NotCarried = append(res.NotCarried, notes...)
	return res
}

// merge is istiod's mergeMetrics state for one provider and both modes
// (mode-specific overrides are not carried).
type merge struct {
	disabledAll bool
	metrics     map[telemetryapi.MetricSelector_IstioMetric]*metricState
	origin      map[*telemetryapi.MetricsOverrides_TagOverride]string
}

type metricState struct {
	disabled *bool
	tags     map[string]*telemetryapi.MetricsOverrides_TagOverride
}

// apply folds one override in; applied reports whether it changed the
// merge, note why (part of) it is not carried.
func (mg *merge) apply(o *telemetryapi.MetricsOverrides) (applied bool, note string) {
	sel := o.GetMatch()
	if mode := sel.GetMode(); mode != telemetryapi.WorkloadMode_CLIENT_AND_SERVER {
		return false, fmt.Sprintf("mode %s: leanmesh's overrides apply to client and server alike", mode)
	}
	var targets []telemetryapi.MetricSelector_IstioMetric
	switch m := sel.GetMetricMatch().(type) {
	case *telemetryapi.MetricSelector_CustomMetric:
		// Istio still counts it as touching a metric: it ends a disable-all.
		mg.disabledAll = false
		return true, fmt.Sprintf("customMetric %q: leanmesh emits Istio's standard metrics only", m.CustomMetric)
	case *telemetryapi.MetricSelector_Metric:
		if m.Metric != telemetryapi.MetricSelector_ALL_METRICS {
			if _, ok := istioMetric[m.Metric]; !ok {
				return false, fmt.Sprintf("metric %s is unknown to leanmesh", m.Metric)
			}
			targets = []telemetryapi.MetricSelector_IstioMetric{m.Metric}
		}
	}
	if targets == nil { // no match, no metric, or ALL_METRICS
		if o.GetDisabled().GetValue() {
			// istiod drops the whole filter and ignores this override's tags.
			mg.disabledAll = true
			return true, ""
		}
		targets = istioMetrics
	}
	mg.disabledAll = false
	for _, m := range targets {
		st := mg.metrics[m]
		if st == nil {
			st = &metricState{tags: map[string]*telemetryapi.MetricsOverrides_TagOverride{}}
			mg.metrics[m] = st
		}
		if d := o.GetDisabled(); d != nil {
			v := d.GetValue()
			st.disabled = &v
		}
		for tag, to := range o.GetTagOverrides() {
			st.tags[tag] = to
		}
	}
	return true, ""
}

// where remembers which override a tag operation came from, for notes.
func (mg *merge) where(o *telemetryapi.MetricsOverrides, where string) {
	if mg.origin == nil {
		mg.origin = map[*telemetryapi.MetricsOverrides_TagOverride]string{}
	}
	for _, to := range o.GetTagOverrides() {
		mg.origin[to] = where
	}
}

// result writes the merge as leanmesh overrides, in Telemetry's metric
// order; one entry for every metric when they all end up alike.
func (mg *merge) result() ([]v1alpha1.MetricOverride, []string) {
	if mg.disabledAll {
		return []v1alpha1.MetricOverride{{Drop: true}}, nil
	}
	var out []v1alpha1.MetricOverride
	var notes []string
	reported := map[*telemetryapi.MetricsOverrides_TagOverride]bool{}
	for _, m := range istioMetrics {
		st := mg.metrics[m]
		if st == nil {
			continue
		}
		mo := v1alpha1.MetricOverride{Name: istioMetric[m]}
		if st.disabled != nil && *st.disabled {
			// Envoy's istio_stats ignores the rest of a dropped metric's entry.
			mo.Drop = true
			out = append(out, mo)
			continue
		}
		tags := make([]string, 0, len(st.tags))
		for tag := range st.tags {
			tags = append(tags, tag)
		}
		sort.Strings(tags)
		for _, tag := range tags {
			to := st.tags[tag]
			if to.GetOperation() == telemetryapi.MetricsOverrides_TagOverride_REMOVE {
				// Removing a label that is not standard is a no-op in Envoy's
				// istio_stats ("Tag is not standard"); the merge has already
				// cancelled a dimension of that name.
				if _, ok := telemetry.LabelByName(tag); ok {
					mo.TagsToRemove = append(mo.TagsToRemove, tag)
				}
				continue
			}
			expr, err := dimension(tag, to.GetValue())
			if err != nil {
				if !reported[to] {
					reported[to] = true
					notes = append(notes, fmt.Sprintf("%s: tagOverrides[%s] value %q: %v", mg.origin[to], tag, to.GetValue(), err))
				}
				continue
			}
			if mo.Dimensions == nil {
				mo.Dimensions = map[string]string{}
			}
			mo.Dimensions[tag] = expr
		}
		if len(mo.TagsToRemove) > 0 || len(mo.Dimensions) > 0 {
			out = append(out, mo)
		}
	}
	if len(out) == len(istioMetrics) && alike(out) {
		all := out[0]
		all.Name = ""
		out = []v1alpha1.MetricOverride{all}
	}
	return out, notes
}

// dimension maps a tag value to the filter's form and checks the label name
// as the filter will.
func dimension(tag, value string) (string, error) {
	expr, err := Expression(value)
	if err != nil {
		return "", err
	}
	if _, err := telemetry.CompileOverrides([]telemetry.MetricOverride{{Dimensions: map[string]string{tag: expr}}}); err != nil {
		return "", err
	}
	return expr, nil
}

func alike(mos []v1alpha1.MetricOverride) bool {
	for _, mo := range mos[1:] {
		a, b := mo, mos[0]
		a.Name, b.Name = "", ""
		if !reflect.DeepEqual(a, b) {
			return false
		}
	}
	return true
}

func providerNames(ps []*telemetryapi.ProviderRef) []string {
	names := make([]string, 0, len(ps))
	for _, p := range ps {
		names = append(names, p.GetName())
	}
	return names
}

// forPrometheus: Istio matches a provider name against the mesh's
// extension providers case-insensitively; "prometheus" is the install's.
func forPrometheus(names []string) bool {
	return slices.ContainsFunc(names, func(n string) bool { return strings.EqualFold(n, "prometheus") })
}

// older orders as Istio resolves several Telemetries of one scope: by
// creation time, then name.
func older(a, b *telemetryv1.Telemetry) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
}
