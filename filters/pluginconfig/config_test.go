package pluginconfig

import (
	"strings"
	"testing"
	"time"

	xdsv3 "github.com/cncf/xds/go/xds/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/leanmesh/leanmesh/filters/telemetry"
)

func TestDefaults(t *testing.T) {
	cases := []struct {
		json          string
		reporter      telemetry.Reporter
		disableFallbk bool
	}{
		{`{"direction":"outbound"}`, telemetry.ReporterSource, false},
		{`{"direction":"inbound"}`, telemetry.ReporterDestination, true},
		{`{"direction":"gateway"}`, telemetry.ReporterSource, true},
		{`{"direction":"inbound","disable_host_header_fallback":false}`, telemetry.ReporterDestination, false},
	}
	for _, c := range cases {
		got, err := FromJSON([]byte(c.json))
		if err != nil {
			t.Fatalf("%s: %v", c.json, err)
		}
		if got.Reporter != c.reporter || got.DisableHostHeaderFallback != c.disableFallbk {
			t.Errorf("%s: reporter %v fallback-disabled %v", c.json, got.Reporter, got.DisableHostHeaderFallback)
		}
		if got.MetadataExchange.PeerCacheSize != 500 || got.MetadataExchange.SendTo != SendInMesh || !got.GRPCMessageCounts {
			t.Errorf("%s: defaults %+v", c.json, got.MetadataExchange)
		}
		if got.TCPReporting != 5*time.Second {
			t.Errorf("tcp reporting default = %v", got.TCPReporting)
		}
	}
	exp, err := FromJSON([]byte(`{"exposition":{"enabled":true}}`))
	if err != nil || exp.Exposition.Path != "/stats/prometheus" {
		t.Fatalf("exposition default: %+v %v", exp, err)
	}
}

func TestErrorsNameTheField(t *testing.T) {
	cases := map[string]string{
		`{"direction":"sideways"}`:          `"direction"`,
		`{}`:                                `"direction" is required`,
		`{"direction":"inbound","bogus":1}`: `unknown field "bogus"`,
		`{"direction":"inbound","histogram_buckets":[1,1]}`:                                `histogram_buckets[1]`,
		`{"direction":"inbound","histogram_buckets":[0]}`:                                  `histogram_buckets[0]`,
		`{"direction":"inbound","histogram_buckets":"x"}`:                                  `"histogram_buckets"`,
		`{"direction":"inbound","max_series":-1}`:                                          `"max_series"`,
		`{"direction":"inbound","metadata_exchange":{"send_to":"x"}}`:                      `metadata_exchange.send_to`,
		`{"direction":"inbound","metadata_exchange":{"peer_cache_size":-5}}`:               `peer_cache_size`,
		`{"direction":"inbound","exposition":{"path":"metrics"}}`:                          `exposition.path`,
		`{"direction":"inbound","tcp_reporting_duration":"1ms"}`:                           `tcp_reporting_duration`,
		`{"direction":"inbound","tcp_reporting_duration":"soon"}`:                          `tcp_reporting_duration`,
		`{"direction":"inbound","stats_eviction_interval":"10"}`:                           `stats_eviction_interval`,
		`{"direction":"inbound","stats_eviction_interval":"500ms"}`:                        `stats_eviction_interval`,
		`{"direction":"inbound","native_histograms":{"schema":9}}`:                         `native_histograms.schema`,
		`{"direction":"inbound","native_histograms":{"schema":-5}}`:                        `native_histograms.schema`,
		`{"direction":"inbound","max_series_bytes":-1}`:                                    `max_series_bytes`,
		`{"direction":"inbound","max_label_value_length":8}`:                               `max_label_value_length`,
		`{"direction":"inbound","metrics":[{"dimensions":{"le":"'x'"}}]}`:                  `reserved`,
		`{"direction":"inbound","metrics":[{"name":"nope"}]}`:                              `metrics[0].name`,
		`{"direction":"inbound","metrics":[{"tags_to_remove":["x"]}]}`:                     `tags_to_remove`,
		`{"direction":"inbound","metrics":[{"dimensions":{"a":"size(request.headers)"}}]}`: `unsupported expression`,
	}
	for in, want := range cases {
		_, err := FromJSON([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want it to mention %s", in, err, want)
		}
	}
}

func TestFromAnyTypedStruct(t *testing.T) {
	v, _ := structpb.NewStruct(map[string]interface{}{"direction": "outbound", "metadata_exchange": map[string]interface{}{"send_to": "all"}})
	a, _ := anypb.New(&xdsv3.TypedStruct{TypeUrl: "type.googleapis.com/leanmesh.Config", Value: v})
	c, err := FromAny(a)
	if err != nil {
		t.Fatal(err)
	}
	if c.Direction != Outbound || c.MetadataExchange.SendTo != SendAll {
		t.Errorf("%+v", c.Config)
	}
	bare, _ := anypb.New(v)
	if _, err := FromAny(bare); err != nil {
		t.Errorf("bare Struct: %v", err)
	}
	wrong, _ := anypb.New(&structpb.Value{})
	if _, err := FromAny(wrong); err == nil || !strings.Contains(err.Error(), "unsupported type") {
		t.Errorf("wrong type: %v", err)
	}
}

func TestParseAttribute(t *testing.T) {
	cases := []struct {
		in   string
		want Attribute
		err  bool
	}{
		{"'constant'", Attribute{Constant, "constant"}, false},
		{`"dq"`, Attribute{Constant, "dq"}, false},
		{"request.headers['X-User']", Attribute{RequestHeader, "x-user"}, false},
		{`request.headers["x-b3"]`, Attribute{RequestHeader, "x-b3"}, false},
		{"request.host", Attribute{Property, "request.host"}, false},
		{"string(destination.port)", Attribute{Property, "destination.port"}, false},
		{"xds.cluster_name", Attribute{Property, "xds.cluster_name"}, false},
		{"request.headers[x]", Attribute{}, true},
		{"request.headers['']", Attribute{}, true},
		{"has(request.host)", Attribute{}, true},
		{"request..host", Attribute{}, true},
		{"foo.bar", Attribute{}, true},
		{"request.", Attribute{}, true},
	}
	for _, c := range cases {
		got, err := ParseAttribute(c.in)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("ParseAttribute(%q) = %+v, %v", c.in, got, err)
		}
	}
}

func TestDimensionsCompile(t *testing.T) {
	c, err := FromJSON([]byte(`{"direction":"outbound","metrics":[{"name":"requests_total","dimensions":{"request_host":"request.host","user":"request.headers['x-user']"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Dimensions) != 2 || len(c.Overrides.Expressions) != 2 {
		t.Fatalf("dimensions %+v", c.Dimensions)
	}
}

func TestEvictionAndNativeHistograms(t *testing.T) {
	c, err := FromJSON([]byte(`{"direction":"inbound","stats_eviction_interval":"10m","native_histograms":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.StatsEviction != 10*time.Minute || !c.NativeHistogramsEnabled || c.NativeSchema != DefaultNativeSchema {
		t.Fatalf("%+v", c)
	}
	c, err = FromJSON([]byte(`{"direction":"inbound","stats_eviction_interval":"0s","native_histograms":{"schema":-2}}`))
	if err != nil || c.StatsEviction != 0 || c.NativeSchema != -2 {
		t.Fatalf("%+v %v", c, err)
	}
	c, _ = FromJSON([]byte(`{"direction":"inbound"}`))
	if c.StatsEviction != 0 || c.NativeHistogramsEnabled {
		t.Fatalf("defaults: %+v", c)
	}
}
