package telemetryapi

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	telemetryapi "istio.io/api/telemetry/v1alpha1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
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

// Result is what a policy takes over from the Telemetries in its scope.
type Result struct {
	// Overrides, in Istio's order (root namespace first, then the
	// policy's namespace): the policy's own spec.metrics go after them.
	Overrides []v1alpha1.MetricOverride
	// From names the Telemetries carried ("ns/name").
	From []string
	// NotCarried says, per item, what was left out and why.
	NotCarried []string
}

// CarryOver reads the namespace-wide Telemetries (no selector, no
// targetRefs) that apply to a policy's pods the way Istio's
// pilot/pkg/model/telemetry.go does: the root namespace's, then the
// namespace's, the oldest one per namespace when several exist. Only the
// Prometheus provider's metrics settings are taken (an empty providers
// list means the mesh default, Prometheus in Istio's install).
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
		if !slices.ContainsFunc(t.Spec.GetMetrics(), func(m *telemetryapi.Metrics) bool { return forPrometheus(m.GetProviders()) }) {
			continue
		}
		if cur := byNS[t.Namespace]; cur == nil || older(t, cur) {
			byNS[t.Namespace] = t
		}
	}
	order := []string{root}
	if policyNS != root {
		order = append(order, policyNS)
	} else {
		var others []string
		for ns := range byNS {
			if ns != root {
				others = append(others, ns)
			}
		}
		sort.Strings(others)
		for _, ns := range others {
			t := byNS[ns]
			res.NotCarried = append(res.NotCarried, fmt.Sprintf("Telemetry %s/%s: a mesh-wide policy renders one config for every namespace; write a policy in %s to carry its metric overrides", t.Namespace, t.Name, ns))
		}
	}
	for _, ns := range order {
		t := byNS[ns]
		if t == nil {
			continue
		}
		name := t.Namespace + "/" + t.Name
		carried := false
		for i, m := range t.Spec.GetMetrics() {
			if !forPrometheus(m.GetProviders()) {
				continue
			}
			if m.GetReportingInterval() != nil {
				res.NotCarried = append(res.NotCarried, fmt.Sprintf("Telemetry %s metrics[%d].reportingInterval: leanmesh reports HTTP at stream end and TCP on its own tcpReportingDuration", name, i))
			}
			for j, o := range m.GetOverrides() {
				where := fmt.Sprintf("Telemetry %s metrics[%d].overrides[%d]", name, i, j)
				mo, notes := override(o)
				for _, n := range notes {
					res.NotCarried = append(res.NotCarried, where+": "+n)
				}
				if mo != nil {
					res.Overrides = append(res.Overrides, *mo)
					carried = true
				}
			}
		}
		if carried {
			res.From = append(res.From, name)
		}
	}
	return res
}

// override maps one MetricsOverrides; nil when nothing of it applies.
func override(o *telemetryapi.MetricsOverrides) (*v1alpha1.MetricOverride, []string) {
	var notes []string
	sel := o.GetMatch()
	if mode := sel.GetMode(); mode != telemetryapi.WorkloadMode_CLIENT_AND_SERVER {
		return nil, []string{fmt.Sprintf("mode %s: leanmesh's overrides apply to client and server alike", mode)}
	}
	mo := &v1alpha1.MetricOverride{}
	if custom := sel.GetCustomMetric(); custom != "" {
		return nil, []string{fmt.Sprintf("customMetric %q: leanmesh emits Istio's standard metrics only", custom)}
	} else if name, ok := istioMetric[sel.GetMetric()]; ok {
		mo.Name = name
	} else {
		return nil, []string{fmt.Sprintf("metric %s is unknown to leanmesh", sel.GetMetric())}
	}
	if d := o.GetDisabled(); d != nil {
		if d.GetValue() {
			mo.Drop = true
		} else {
			notes = append(notes, "disabled: false re-enables a metric a parent disabled; leanmesh's overrides cannot undo an earlier drop")
		}
	}
	tags := make([]string, 0, len(o.GetTagOverrides()))
	for tag := range o.GetTagOverrides() {
		tags = append(tags, tag)
	}
	sort.Strings(tags)
	for _, tag := range tags {
		to := o.GetTagOverrides()[tag]
		switch to.GetOperation() {
		case telemetryapi.MetricsOverrides_TagOverride_REMOVE:
			mo.TagsToRemove = append(mo.TagsToRemove, tag)
		case telemetryapi.MetricsOverrides_TagOverride_UPSERT:
			expr, err := Expression(to.GetValue())
			if err != nil {
				notes = append(notes, fmt.Sprintf("tagOverrides[%s] value %q: %v", tag, to.GetValue(), err))
				continue
			}
			if mo.Dimensions == nil {
				mo.Dimensions = map[string]string{}
			}
			mo.Dimensions[tag] = expr
		}
	}
	if !mo.Drop && len(mo.TagsToRemove) == 0 && len(mo.Dimensions) == 0 {
		return nil, notes
	}
	return mo, notes
}

func forPrometheus(ps []*telemetryapi.ProviderRef) bool {
	if len(ps) == 0 {
		return true
	}
	for _, p := range ps {
		if strings.EqualFold(p.GetName(), "prometheus") {
			return true
		}
	}
	return false
}

// older orders as Istio resolves several Telemetries of one scope: by
// creation time, then name.
func older(a, b *telemetryv1.Telemetry) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
}
