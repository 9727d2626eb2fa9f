package telemetry

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

func hostKey(host string) Key {
	return Key{Reporter: ReporterSource, Local: localProductpage, Peer: peerReviews, Service: Service{Host: host, Name: host}, ResponseCode: 200, ResponseFlags: "-"}
}

func TestSeriesByteBudget(t *testing.T) {
	const budget = 1 << 20
	r := NewRegistry(Options{MaxSeriesBytes: budget})
	for i := 0; i < 5000; i++ {
		k := hostKey(fmt.Sprintf("host-%d.example", i))
		r.RecordHTTP(0, &k, &HTTPObservation{})
	}
	mem, _ := r.Usage()
	t.Logf("max_series_bytes %d: %d series (%d bytes estimated), %d label sets folded into overflow", budget, r.Series(), mem, r.OverBudget())
	// The overflow series themselves are linked outside the budget (link
	// with budgeted=false): they are what the budget folds into.
	var overflowCost int64
	for i := range r.shards {
		for _, s := range r.shards[i].overflow {
			overflowCost += s.cost
			for _, ls := range s.sets {
				overflowCost += labelSetCost(ls.text)
			}
		}
	}
	if mem-overflowCost > budget || r.OverBudget() == 0 || r.Series() == 0 {
		t.Fatalf("mem %d budget %d overBudget %d", mem, budget, r.OverBudget())
	}
	fams := parseExposition(t, r.AppendText(nil))
	if v := find(t, fams, "istio_requests_total", map[string]string{"destination_service": OverflowValue}).GetCounter().GetValue(); v != float64(r.OverBudget()) {
		t.Fatalf("overflow series counted %v, want %d", v, r.OverBudget())
	}
}

func TestExpositionByteBudget(t *testing.T) {
	const budget = 2 << 20
	r := NewRegistry(Options{MaxExpositionBytes: budget})
	for i := 0; i < 500; i++ {
		k := hostKey(fmt.Sprintf("host-%d.example", i))
		r.RecordHTTP(uint32(i), &k, &HTTPObservation{DurationMs: uint64(i), HasDuration: true, HasBytes: true, RequestBytes: 10, ResponseBytes: 1e6})
	}
	text := r.AppendText(nil)
	_, est := r.Usage()
	t.Logf("max_exposition_bytes %d: scrape %d bytes (estimate %d), %d series, %d folded into overflow", budget, len(text), est, r.Series(), r.OverBudget())
	if len(istioPart(text)) > budget || r.OverBudget() == 0 {
		t.Fatalf("scrape %d estimate %d budget %d", len(text), est, budget)
	}
	if int64(len(istioPart(text))) > est {
		t.Fatalf("estimate %d below the real %d: not an upper bound", est, len(istioPart(text)))
	}
	parseExposition(t, text)
}

// Values longer than the cap are cut (at a rune boundary) before lookup, so
// distinct long values sharing a prefix share one series and the registry
// stores only the cut copy.
func TestLabelValueLengthCap(t *testing.T) {
	r := NewRegistry(Options{MaxLabelValueLength: 64})
	long := strings.Repeat("é", 40) // 80 bytes
	for i := 0; i < 100; i++ {
		k := hostKey(long + fmt.Sprint(i))
		r.RecordHTTP(0, &k, &HTTPObservation{})
	}
	if r.Series() != 1 {
		t.Fatalf("series %d, want 1", r.Series())
	}
	p := r.InternPeer(Peer{Workload: strings.Repeat("w", 5000)})
	if len(p.Workload) != 64 {
		t.Fatalf("interned peer workload %d bytes", len(p.Workload))
	}
	fams := parseExposition(t, r.AppendText(nil))
	m := fams["istio_requests_total"].Metric[0]
	v := labelsOf(m)["destination_service"]
	if len(v) > 64 || !utf8.ValidString(v) || v != strings.Repeat("é", 32) {
		t.Fatalf("cut value %q (%d bytes)", v, len(v))
	}
	if m.GetCounter().GetValue() != 100 {
		t.Fatalf("count %v", m.GetCounter().GetValue())
	}
}

// hostileValues are request-derived values an attacker controls.
var hostileValues = []string{
	"\xff\xfe", "a\x00b", "tab\there", "cr\rlf\n", "quote\"back\\slash", "\x1b[31mred", "c1\u0085ctl",
	"ok-ünïcödé", "x\xe2\x82", strings.Repeat("x", 10000), "le=\"1\"}", "} 1\nistio_requests_total 9",
}

// TestHostileLabelValuesParse feeds every hostile value through a custom
// request-header dimension (and the Host fallback) and parses the scrape
// with Prometheus' own text parser, and with its protobuf decoder.
func TestHostileLabelValuesParse(t *testing.T) {
	ov, err := CompileOverrides([]MetricOverride{{Dimensions: map[string]string{"user_agent": "request.headers['user-agent']"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, native := range []bool{false, true} {
		r := NewRegistry(Options{Overrides: ov, NativeHistograms: native, NativeSchema: 3})
		for i, v := range hostileValues {
			k := hostKey(v)
			k.Extra = JoinExtra([]string{v})
			r.RecordHTTP(uint32(i), &k, &HTTPObservation{DurationMs: 5, HasDuration: true})
		}
		text := r.AppendText(nil)
		fams := parseExposition(t, text)
		got := len(fams["istio_requests_total"].GetMetric())
		for _, m := range fams["istio_requests_total"].GetMetric() {
			for _, lp := range m.GetLabel() {
				if !utf8.ValidString(lp.GetValue()) || len(lp.GetValue()) > 3*DefaultMaxLabelValueLength {
					t.Errorf("label %s=%q", lp.GetName(), lp.GetValue())
				}
			}
		}
		if got != len(hostileValues) {
			t.Errorf("native=%v: %d series parsed, want %d", native, got, len(hostileValues))
		}
		if native {
			body, ct := ContentFor(nil, protoAccept, r)
			if ct != ProtoContentType {
				t.Fatalf("content type %q", ct)
			}
			pf := decodeProto(t, body)
			if n := len(pf["istio_requests_total"].GetMetric()); n != len(hostileValues) {
				t.Errorf("protobuf: %d series, want %d", n, len(hostileValues))
			}
		}
	}
}

func TestReservedDimensionNames(t *testing.T) {
	for _, name := range []string{"le", "quantile", "__name__"} {
		if _, err := CompileOverrides([]MetricOverride{{Dimensions: map[string]string{name: "'x'"}}}); err == nil {
			t.Errorf("dimension %q accepted", name)
		}
	}
}

// protoAccept is the Accept header of Prometheus v2.42 with
// --enable-feature=native-histograms (scrape.go, scrapeAcceptHeaderWithProtobuf).
const protoAccept = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.8,application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"

func decodeProto(t testing.TB, body []byte) map[string]*dto.MetricFamily {
	t.Helper()
	dec := expfmt.NewDecoder(bytes.NewReader(body), expfmt.NewFormat(expfmt.TypeProtoDelim))
	out := map[string]*dto.MetricFamily{}
	for {
		var f dto.MetricFamily
		if err := dec.Decode(&f); err != nil {
			if err.Error() == "EOF" {
				return out
			}
			t.Fatalf("protobuf exposition: %v", err)
		}
		if _, dup := out[f.GetName()]; dup {
			t.Fatalf("family %s twice", f.GetName())
		}
		out[f.GetName()] = &f
	}
}
