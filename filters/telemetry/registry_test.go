package telemetry

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func parseExposition(t testing.TB, text []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("exposition does not parse: %v\n%s", err, head(text))
	}
	return fams
}

func head(b []byte) string {
	if len(b) > 2000 {
		return string(b[:2000]) + "..."
	}
	return string(b)
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

// find returns the sample of family whose labels include want.
func find(t testing.TB, fams map[string]*dto.MetricFamily, family string, want map[string]string) *dto.Metric {
	t.Helper()
	f := fams[family]
	if f == nil {
		t.Fatalf("family %s missing", family)
	}
	var found *dto.Metric
	for _, m := range f.GetMetric() {
		ls := labelsOf(m)
		match := true
		for k, v := range want {
			if ls[k] != v {
				match = false
			}
		}
		if match {
			if found != nil {
				t.Fatalf("%s: more than one series matches %v", family, want)
			}
			found = m
		}
	}
	if found == nil {
		t.Fatalf("%s: no series matches %v", family, want)
	}
	return found
}

func clientKey(code uint16) Key {
	return Key{Reporter: ReporterSource, Local: localProductpage, Peer: peerReviews,
		Service: Service{Host: "reviews.default.svc.cluster.local", Name: "reviews"}, ResponseCode: code, ResponseFlags: "-"}
}

func TestExpositionValues(t *testing.T) {
	r := NewRegistry(Options{IstioVersion: "1.31.1"})
	k200, k503 := clientKey(200), clientKey(503)
	k503.ResponseFlags = "UF"
	grpc := clientKey(200)
	grpc.Protocol, grpc.GRPCStatus = ProtocolGRPC, "14"
	// The same label set recorded on two workers merges into one series.
	r.RecordHTTP(0, &k200, &HTTPObservation{DurationMs: 3, HasDuration: true, RequestBytes: 100, ResponseBytes: 2000, HasBytes: true})
	r.RecordHTTP(1, &k200, &HTTPObservation{DurationMs: 70, HasDuration: true, RequestBytes: 100, ResponseBytes: 4000000, HasBytes: true})
	r.RecordHTTP(1, &k503, &HTTPObservation{})
	r.RecordHTTP(0, &grpc, &HTTPObservation{RequestMessages: 3, ResponseMessages: 5})

	fams := parseExposition(t, r.AppendText(nil))
	req := find(t, fams, "istio_requests_total", map[string]string{"response_code": "200", "request_protocol": "http"})
	if got := req.GetCounter().GetValue(); got != 2 {
		t.Errorf("requests 200 = %v, want 2", got)
	}
	if len(labelsOf(req)) != 25 {
		t.Errorf("requests_total has %d labels, want 25", len(labelsOf(req)))
	}
	if got := find(t, fams, "istio_requests_total", map[string]string{"response_code": "503", "response_flags": "UF"}).GetCounter().GetValue(); got != 1 {
		t.Errorf("requests 503 = %v", got)
	}
	h := find(t, fams, "istio_request_duration_milliseconds", map[string]string{"response_code": "200", "request_protocol": "http"}).GetHistogram()
	if h.GetSampleCount() != 2 || h.GetSampleSum() != 73 {
		t.Errorf("duration count/sum = %d/%v", h.GetSampleCount(), h.GetSampleSum())
	}
	wantCum := map[float64]uint64{0.5: 0, 1: 0, 5: 1, 50: 1, 100: 2, 3600000: 2}
	for _, b := range h.GetBucket() {
		if w, ok := wantCum[b.GetUpperBound()]; ok && b.GetCumulativeCount() != w {
			t.Errorf("duration bucket le=%v = %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), w)
		}
	}
	if len(h.GetBucket()) != len(DefaultBuckets)+1 || !math.IsInf(h.GetBucket()[len(DefaultBuckets)].GetUpperBound(), 1) {
		t.Errorf("buckets = %d, want %d plus +Inf", len(h.GetBucket()), len(DefaultBuckets))
	}
	rb := find(t, fams, "istio_response_bytes", map[string]string{"response_code": "200", "request_protocol": "http"}).GetHistogram()
	if rb.GetSampleCount() != 2 || rb.GetSampleSum() != 4002000 {
		t.Errorf("response bytes count/sum = %d/%v", rb.GetSampleCount(), rb.GetSampleSum())
	}
	// 4,000,000 is above the last bound: only +Inf (the count) holds it.
	if last := rb.GetBucket()[len(rb.GetBucket())-2]; last.GetCumulativeCount() != 1 {
		t.Errorf("le=3600000 = %d, want 1", last.GetCumulativeCount())
	}
	// Requests without duration/bytes are counted but not observed.
	if got := find(t, fams, "istio_request_duration_milliseconds", map[string]string{"response_code": "503"}).GetHistogram().GetSampleCount(); got != 0 {
		t.Errorf("503 duration count = %d, want 0", got)
	}
	msgs := fams["istio_request_messages_total"]
	if msgs == nil || len(msgs.GetMetric()) != 1 {
		t.Fatalf("request_messages_total should have exactly the gRPC series: %v", msgs)
	}
	if got := msgs.GetMetric()[0].GetCounter().GetValue(); got != 3 || len(labelsOf(msgs.GetMetric()[0])) != 20 {
		t.Errorf("request messages = %v with %d labels", got, len(labelsOf(msgs.GetMetric()[0])))
	}
	if got := find(t, fams, "istio_response_messages_total", nil).GetCounter().GetValue(); got != 5 {
		t.Errorf("response messages = %v", got)
	}
	if got := find(t, fams, "istio_requests_total", map[string]string{"request_protocol": "grpc", "grpc_response_status": "14"}).GetCounter().GetValue(); got != 1 {
		t.Errorf("grpc requests = %v", got)
	}
	if b, ok := fams["istio_build"]; ok {
		t.Errorf("istio_build served without a name prefix (Istio's own filter reports it in every mode): %v", b)
	}
	if _, ok := fams["istio_tcp_connections_opened_total"]; ok {
		t.Error("no TCP series were recorded, family must be absent")
	}
	if got := find(t, fams, "leanmesh_series", nil).GetGauge().GetValue(); got != 4 {
		t.Errorf("leanmesh_series = %v, want 4 (3 label sets, one on two workers)", got)
	}
}

// TestBuildGaugeOnlyUnderPrefix: istio_build is Istio's own. Its stats
// filter sets the gauge whenever an istio.stats config is built, HTTP or
// network (istio_stats.cc Config::Config → recordVersion), and istio.stats
// stays on the TCP chains in every mode, so leanmesh serves no unprefixed
// copy (one would double sum(istio_build)), in text or protobuf, with or
// without registries (Istio mode's scrape listener). Shadow's prefixed copy
// stays, with the tag, for compare.
func TestBuildGaugeOnlyUnderPrefix(t *testing.T) {
	lean := NewRegistry(Options{IstioVersion: "1.31.1"})
	shadow := NewRegistry(Options{IstioVersion: "1.30.2", NamePrefix: "leanmesh_shadow_"})
	k := clientKey(200)
	lean.RecordHTTP(0, &k, &HTTPObservation{})
	shadow.RecordHTTP(0, &k, &HTTPObservation{})
	for _, c := range []struct {
		name       string
		regs       []*Registry
		shadowTag  string // "" = no leanmesh_shadow_istio_build
		wantSeries bool
	}{
		{"Istio mode (no registry)", nil, "", false},
		{"LeanMesh", []*Registry{lean}, "", true},
		{"Shadow", []*Registry{shadow}, "1.30.2", false},
		{"LeanMesh and Shadow configs in one proxy", []*Registry{lean, shadow}, "1.30.2", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			for format, fams := range map[string]map[string]*dto.MetricFamily{
				"text": parseExposition(t, AppendText(nil, c.regs...)), "protobuf": decodeProto(t, AppendProto(nil, c.regs...)),
			} {
				if f, ok := fams[BuildMetricName]; ok {
					t.Errorf("%s: unprefixed istio_build served: %v", format, f)
				}
				if _, ok := fams["istio_requests_total"]; ok != c.wantSeries {
					t.Errorf("%s: istio_requests_total present %v, want %v", format, ok, c.wantSeries)
				}
				if c.shadowTag == "" {
					if f, ok := fams["leanmesh_shadow_istio_build"]; ok {
						t.Errorf("%s: leanmesh_shadow_istio_build without a Shadow registry: %v", format, f)
					}
					continue
				}
				b := find(t, fams, "leanmesh_shadow_istio_build", map[string]string{"component": "proxy", "tag": c.shadowTag})
				if b.GetGauge().GetValue() != 1 || len(fams["leanmesh_shadow_istio_build"].GetMetric()) != 1 {
					t.Errorf("%s: leanmesh_shadow_istio_build = %v", format, fams["leanmesh_shadow_istio_build"])
				}
			}
		})
	}
}

func TestTCPFamilies(t *testing.T) {
	r := NewRegistry(Options{})
	k := Key{Reporter: ReporterDestination, Local: peerReviews, Protocol: ProtocolTCP, ResponseFlags: "-"}
	r.RecordTCP(3, &k, &TCPObservation{Opened: 1, ReceivedBytes: 10})
	r.RecordTCP(3, &k, &TCPObservation{SentBytes: 7, ReceivedBytes: 5, Closed: 1})
	fams := parseExposition(t, r.AppendText(nil))
	for fam, want := range map[string]float64{
		"istio_tcp_connections_opened_total": 1, "istio_tcp_connections_closed_total": 1,
		"istio_tcp_sent_bytes_total": 7, "istio_tcp_received_bytes_total": 15,
	} {
		m := find(t, fams, fam, map[string]string{"request_protocol": "tcp"})
		if m.GetCounter().GetValue() != want {
			t.Errorf("%s = %v, want %v", fam, m.GetCounter().GetValue(), want)
		}
		if n := len(labelsOf(m)); n != 23 {
			t.Errorf("%s has %d labels, want 23", fam, n)
		}
	}
	if _, ok := fams["istio_requests_total"]; ok {
		t.Error("no HTTP series were recorded")
	}
}

func TestOverrides(t *testing.T) {
	o, err := CompileOverrides([]MetricOverride{
		{Name: "request_bytes", Drop: true},
		{Name: "requests_total", TagsToRemove: []string{"response_flags", "destination_principal"}, Dimensions: map[string]string{"request_host": "request.host", "response_code": "'fixed'"}},
		{Name: "", TagsToRemove: []string{"source_principal"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Expressions) != 2 {
		t.Fatalf("expressions = %v", o.Expressions)
	}
	idx := map[string]int{}
	for i, e := range o.Expressions {
		idx[e] = i
	}
	extra := make([]string, 2)
	extra[idx["request.host"]] = "reviews:9080"
	extra[idx["'fixed'"]] = "fixed"
	r := NewRegistry(Options{Overrides: o})
	a, b := clientKey(200), clientKey(200)
	a.Extra, b.Extra = JoinExtra(extra), JoinExtra(extra)
	b.ResponseFlags = "UF" // differs only in a removed label: merges into one series
	r.RecordHTTP(0, &a, &HTTPObservation{HasBytes: true, RequestBytes: 1, HasDuration: true, DurationMs: 1})
	r.RecordHTTP(0, &b, &HTTPObservation{HasBytes: true, RequestBytes: 1, HasDuration: true, DurationMs: 1})
	fams := parseExposition(t, r.AppendText(nil))
	if _, ok := fams["istio_request_bytes"]; ok {
		t.Error("request_bytes was dropped")
	}
	m := find(t, fams, "istio_requests_total", map[string]string{"request_host": "reviews:9080"})
	ls := labelsOf(m)
	if m.GetCounter().GetValue() != 2 {
		t.Errorf("merged requests = %v, want 2", m.GetCounter().GetValue())
	}
	for _, gone := range []string{"response_flags", "destination_principal", "source_principal"} {
		if _, ok := ls[gone]; ok {
			t.Errorf("label %s should be removed", gone)
		}
	}
	if ls["response_code"] != "fixed" {
		t.Errorf("response_code override = %q", ls["response_code"])
	}
	// Other families keep their labels except the ones removed for all.
	d := fams["istio_request_duration_milliseconds"]
	if len(d.GetMetric()) != 2 {
		t.Errorf("duration series = %d, want 2 (flags still distinguish them)", len(d.GetMetric()))
	}
	if _, ok := labelsOf(d.GetMetric()[0])["source_principal"]; ok {
		t.Error("source_principal removed for all families")
	}
}

func TestCompileOverridesErrors(t *testing.T) {
	cases := []struct {
		in   MetricOverride
		want string
	}{
		{MetricOverride{Name: "nope"}, `metrics[0].name: unknown metric "nope"`},
		{MetricOverride{TagsToRemove: []string{"bogus"}}, `metrics[0].tags_to_remove: "bogus"`},
		{MetricOverride{Dimensions: map[string]string{"bad-name": "x"}}, `metrics[0].dimensions: "bad-name"`},
		{MetricOverride{Dimensions: map[string]string{"ok": " "}}, `metrics[0].dimensions[ok]: empty expression`},
	}
	for _, c := range cases {
		_, err := CompileOverrides([]MetricOverride{c.in})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err = %v, want it to contain %q", c.in, err, c.want)
		}
	}
}

func TestCardinalityCap(t *testing.T) {
	r := NewRegistry(Options{MaxSeries: 10})
	for i := 0; i < 25; i++ {
		k := clientKey(200)
		k.Service.Host = fmt.Sprintf("host-%d", i)
		r.RecordHTTP(0, &k, &HTTPObservation{})
	}
	if r.Series() != 10 || r.Overflowed() != 15 {
		t.Fatalf("series=%d overflowed=%d, want 10 and 15", r.Series(), r.Overflowed())
	}
	fams := parseExposition(t, r.AppendText(nil))
	of := find(t, fams, "istio_requests_total", map[string]string{"destination_service": OverflowValue})
	if of.GetCounter().GetValue() != 15 {
		t.Errorf("overflow series = %v, want 15", of.GetCounter().GetValue())
	}
	if got := find(t, fams, "leanmesh_series_overflow_records_total", nil).GetCounter().GetValue(); got != 15 {
		t.Errorf("overflow counter = %v", got)
	}
	if n := len(fams["istio_requests_total"].GetMetric()); n != 11 {
		t.Errorf("requests_total series = %d, want 11", n)
	}
}

func TestInternPeer(t *testing.T) {
	r := NewRegistry(Options{})
	a := r.InternPeer(*peerReviews)
	b := r.InternPeer(*peerReviews)
	if a != b {
		t.Fatal("equal peers must intern to one pointer")
	}
	if c := r.InternPeer(Peer{Workload: "other"}); c == a {
		t.Fatal("different peers must not share a pointer")
	}
}

func TestEscaping(t *testing.T) {
	r := NewRegistry(Options{})
	k := clientKey(200)
	k.Service.Host = "we\"ird\\host\nname"
	r.RecordHTTP(0, &k, &HTTPObservation{})
	fams := parseExposition(t, r.AppendText(nil))
	find(t, fams, "istio_requests_total", map[string]string{"destination_service": "we\"ird\\host\nname"})
}

func TestCustomBuckets(t *testing.T) {
	r := NewRegistry(Options{Buckets: []float64{100, 1, 10}})
	k := clientKey(200)
	r.RecordHTTP(0, &k, &HTTPObservation{HasDuration: true, DurationMs: 5})
	h := find(t, parseExposition(t, r.AppendText(nil)), "istio_request_duration_milliseconds", nil).GetHistogram()
	var bounds []float64
	for _, b := range h.GetBucket() {
		bounds = append(bounds, b.GetUpperBound())
	}
	if fmt.Sprint(bounds) != "[1 10 100 +Inf]" || h.GetBucket()[1].GetCumulativeCount() != 1 || h.GetBucket()[0].GetCumulativeCount() != 0 {
		t.Errorf("bounds %v buckets %v", bounds, h.GetBucket())
	}
}

// Concurrent writers on the same and on different workers, with scrapes in
// between: run under -race; the totals must add up exactly.
func TestConcurrentWriters(t *testing.T) {
	r := NewRegistry(Options{})
	const writers, perWriter = 8, 2000
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				k := clientKey(uint16(200 + i%3))
				r.RecordHTTP(uint32(w%3), &k, &HTTPObservation{HasDuration: true, DurationMs: uint64(i % 100)})
				if i%500 == 0 {
					r.AppendText(nil)
				}
			}
		}(w)
	}
	wg.Wait()
	fams := parseExposition(t, r.AppendText(nil))
	var total float64
	for _, m := range fams["istio_requests_total"].GetMetric() {
		total += m.GetCounter().GetValue()
	}
	if total != writers*perWriter {
		t.Fatalf("total = %v, want %d", total, writers*perWriter)
	}
	if n := len(fams["istio_requests_total"].GetMetric()); n != 3 {
		t.Fatalf("series = %d, want 3", n)
	}
	var count uint64
	for _, m := range fams["istio_request_duration_milliseconds"].GetMetric() {
		count += m.GetHistogram().GetSampleCount()
	}
	if count != writers*perWriter {
		t.Fatalf("histogram count = %d", count)
	}
}

func TestRecordDoesNotAllocate(t *testing.T) {
	r := NewRegistry(Options{})
	k := clientKey(200)
	o := &HTTPObservation{HasDuration: true, DurationMs: 12, HasBytes: true, RequestBytes: 300, ResponseBytes: 5000}
	r.RecordHTTP(0, &k, o)
	if n := testing.AllocsPerRun(1000, func() { r.RecordHTTP(0, &k, o) }); n != 0 {
		t.Fatalf("RecordHTTP on a known series allocates %v times", n)
	}
}
