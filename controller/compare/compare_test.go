package compare

import (
	"bytes"
	"strings"
	"testing"

	"github.com/leanmesh/leanmesh/filters/pluginconfig"
)

const istio = `# TYPE istio_requests_total counter
istio_requests_total{reporter="destination",response_code="200",pod="a"} 10
istio_requests_total{reporter="destination",response_code="503",pod="a"} 2
# TYPE istio_request_duration_milliseconds histogram
istio_request_duration_milliseconds_bucket{reporter="destination",le="1"} 3
istio_request_duration_milliseconds_bucket{reporter="destination",le="5"} 9
istio_request_duration_milliseconds_bucket{reporter="destination",le="+Inf"} 10
istio_request_duration_milliseconds_sum{reporter="destination"} 31.5
istio_request_duration_milliseconds_count{reporter="destination"} 10
# TYPE envoy_cluster_upstream_rq counter
envoy_cluster_upstream_rq{cluster="x"} 99
`

func TestCompare(t *testing.T) {
	cases := []struct {
		name  string
		right string
		opts  Options
		ok    bool
		want  []string // substrings of the report
	}{
		{
			name: "identical, label order and envoy_ families ignored",
			right: `# TYPE istio_requests_total counter
istio_requests_total{pod="a",response_code="200",reporter="destination"} 10
istio_requests_total{response_code="503",reporter="destination",pod="a"} 2
# TYPE istio_request_duration_milliseconds histogram
istio_request_duration_milliseconds_bucket{reporter="destination",le="1"} 3
istio_request_duration_milliseconds_bucket{reporter="destination",le="5"} 9
istio_request_duration_milliseconds_bucket{reporter="destination",le="+Inf"} 10
istio_request_duration_milliseconds_sum{reporter="destination"} 31.5
istio_request_duration_milliseconds_count{reporter="destination"} 10
`,
			ok:   true,
			want: []string{"MATCH (LeanMesh mode): 3 series compared"},
		},
		{
			name: "missing series on each side",
			right: `# TYPE istio_requests_total counter
istio_requests_total{reporter="destination",response_code="200",pod="a"} 10
istio_requests_total{reporter="destination",response_code="404",pod="a"} 1
`,
			want: []string{
				`missing in leanmesh: istio_requests_total{pod="a",reporter="destination",response_code="503"}`,
				`missing in istio: istio_requests_total{pod="a",reporter="destination",response_code="404"}`,
				`missing in leanmesh: istio_request_duration_milliseconds{reporter="destination"}`,
			},
		},
		{
			name:  "counter beyond tolerance",
			right: strings.Replace(istio, `response_code="200",pod="a"} 10`, `response_code="200",pod="a"} 12`, 1),
			opts:  Options{RelTolerance: 0.1},
			want:  []string{`differs istio_requests_total{pod="a",reporter="destination",response_code="200"} value: istio=10 leanmesh=12`},
		},
		{
			name:  "counter within tolerance",
			right: strings.Replace(istio, `response_code="200",pod="a"} 10`, `response_code="200",pod="a"} 10.5`, 1),
			opts:  Options{RelTolerance: 0.1},
			ok:    true,
		},
		{
			name:  "absolute tolerance",
			right: strings.Replace(istio, `response_code="503",pod="a"} 2`, `response_code="503",pod="a"} 3`, 1),
			opts:  Options{AbsTolerance: 1},
			ok:    true,
		},
		{
			name:  "histogram bucket, sum and count",
			right: strings.NewReplacer(`le="5"} 9`, `le="5"} 8`, `_sum{reporter="destination"} 31.5`, `_sum{reporter="destination"} 40`).Replace(istio),
			want: []string{
				`differs istio_request_duration_milliseconds{reporter="destination"} bucket le="5": istio=9 leanmesh=8`,
				`differs istio_request_duration_milliseconds{reporter="destination"} sum: istio=31.5 leanmesh=40`,
			},
		},
		{
			name:  "histogram bucket layout",
			right: strings.Replace(istio, `le="5"} 9`, `le="10"} 9`, 1),
			want:  []string{`bucket le="5": bucket bound on one side only`, `bucket le="10": bucket bound on one side only`},
		},
		{
			name: "type mismatch",
			right: `# TYPE istio_requests_total counter
istio_requests_total{reporter="destination",response_code="200",pod="a"} 10
istio_requests_total{reporter="destination",response_code="503",pod="a"} 2
# TYPE istio_request_duration_milliseconds counter
istio_request_duration_milliseconds{reporter="destination"} 10
`,
			want: []string{"histogram on one side only"},
		},
		{
			name: "ignored label sums series",
			right: `# TYPE istio_requests_total counter
istio_requests_total{reporter="destination",response_code="200",pod="b"} 4
istio_requests_total{reporter="destination",response_code="200",pod="c"} 6
istio_requests_total{reporter="destination",response_code="503",pod="b"} 2
# TYPE istio_request_duration_milliseconds histogram
istio_request_duration_milliseconds_bucket{reporter="destination",le="1"} 3
istio_request_duration_milliseconds_bucket{reporter="destination",le="5"} 9
istio_request_duration_milliseconds_bucket{reporter="destination",le="+Inf"} 10
istio_request_duration_milliseconds_sum{reporter="destination"} 31.5
istio_request_duration_milliseconds_count{reporter="destination"} 10
`,
			opts: Options{IgnoreLabels: []string{"pod"}},
			ok:   true,
		},
		{
			name:  "prefix filter",
			right: "# TYPE envoy_cluster_upstream_rq counter\nenvoy_cluster_upstream_rq{cluster=\"x\"} 1\n",
			opts:  Options{Prefixes: []string{"envoy_"}, Mode: ModeAll},
			want:  []string{`differs envoy_cluster_upstream_rq{cluster="x"} value: istio=99 leanmesh=1`},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep, err := Compare(strings.NewReader(istio), strings.NewReader(c.right), c.opts)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			rep.Write(&buf, "istio", "leanmesh")
			if rep.OK() != c.ok {
				t.Errorf("OK = %v, want %v\n%s", rep.OK(), c.ok, buf.String())
			}
			for _, w := range c.want {
				if !strings.Contains(buf.String(), w) {
					t.Errorf("report lacks %q:\n%s", w, buf.String())
				}
			}
		})
	}
}

func TestParseError(t *testing.T) {
	if _, err := Compare(strings.NewReader("istio_requests_total{"), strings.NewReader(""), Options{}); err == nil || !strings.Contains(err.Error(), "left") {
		t.Fatalf("want a left-side parse error, got %v", err)
	}
}

// TestOwnedFamilies: only the families leanmesh records in the proxy's mode
// are compared; Istio's TCP series are Istio-only by design; Shadow names are
// detected and stripped; a real difference still fails.
func TestOwnedFamilies(t *testing.T) {
	const istio = `# TYPE istio_requests_total counter
istio_requests_total{reporter="source",response_code="200"} 10
# TYPE istio_tcp_connections_opened_total counter
istio_tcp_connections_opened_total{reporter="source",destination_service="db"} 3
# TYPE istio_tcp_sent_bytes_total counter
istio_tcp_sent_bytes_total{reporter="source",destination_service="db"} 1200
# TYPE istio_build gauge
istio_build{component="proxy",tag="1.31.1"} 1
`
	const lean = `# TYPE istio_requests_total counter
istio_requests_total{reporter="source",response_code="200"} 10
`
	shadow := strings.ReplaceAll(lean+`# TYPE istio_build gauge
istio_build{component="proxy",tag="1.31.1"} 1
`, "istio_", pluginconfig.ShadowMetricPrefix+"istio_")
	for _, c := range []struct {
		name     string
		right    string
		mode     Mode
		ok       bool
		wantMode Mode
		want     []string
	}{
		{"LeanMesh: TCP is Istio's", lean, ModeAuto, true, ModeLeanMesh, []string{
			"istio-only by design in LeanMesh mode: istio_tcp_connections_opened_total (1 series, not compared)",
			"istio-only by design in LeanMesh mode: istio_build (1 series, not compared)",
			"MATCH (LeanMesh mode): 1 series compared"}},
		{"Shadow detected, prefix stripped", shadow, ModeAuto, true, ModeShadow, []string{
			"istio-only by design in Shadow mode: istio_tcp_sent_bytes_total", "MATCH (Shadow mode): 2 series compared"}},
		{"Shadow after LeanMesh: the earlier unprefixed series are not summed in", shadow + "# TYPE istio_requests_total counter\nistio_requests_total{reporter=\"source\",response_code=\"200\"} 7\n",
			ModeAuto, true, ModeShadow, []string{"MATCH (Shadow mode): 2 series compared"}},
		{"Shadow given, real difference", strings.Replace(shadow, "} 10", "} 9", 1), ModeShadow, false, ModeShadow, []string{
			`differs istio_requests_total{reporter="source",response_code="200"} value: istio=10 leanmesh=9`}},
		{"LeanMesh missing an owned series", "# TYPE leanmesh_series gauge\nleanmesh_series 0\n", ModeLeanMesh, false, ModeLeanMesh, []string{
			`missing in leanmesh: istio_requests_total{reporter="source",response_code="200"}`}},
		{"all: TCP counted as missing", lean, ModeAll, false, ModeAll, []string{"missing in leanmesh: istio_tcp_sent_bytes_total"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep, err := Compare(strings.NewReader(istio), strings.NewReader(c.right), Options{Mode: c.mode})
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			rep.Write(&buf, "istio", "leanmesh")
			if rep.OK() != c.ok || rep.Mode != c.wantMode {
				t.Errorf("OK %v mode %s, want %v %s\n%s", rep.OK(), rep.Mode, c.ok, c.wantMode, buf.String())
			}
			for _, w := range c.want {
				if !strings.Contains(buf.String(), w) {
					t.Errorf("report lacks %q:\n%s", w, buf.String())
				}
			}
		})
	}
}
