package peer

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// nodeSample is a testdata/nodes/*.json file: an Envoy node as istio-agent
// writes it, and the header Istio 1.31 would send for it (written by hand
// from Istio's convertStructToWorkloadMetadata + convertWorkloadMetadataToStruct).
type nodeSample struct {
	name             string
	node             *corev3.Node
	additionalLabels []string
	wantHeader       json.RawMessage
	wantLocal        Workload
}

func loadNodeSamples(t testing.TB) []nodeSample {
	t.Helper()
	files, err := filepath.Glob("testdata/nodes/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no node samples: %v", err)
	}
	var out []nodeSample
	for _, f := range files {
		doc, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var file struct {
			Node             json.RawMessage
			AdditionalLabels []string
			WantHeader       json.RawMessage
			WantLocal        Workload
		}
		if err := json.Unmarshal(doc, &file); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		n := &corev3.Node{}
		if err := protojson.Unmarshal(file.Node, n); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, nodeSample{
			name: strings.TrimSuffix(filepath.Base(f), ".json"), node: n,
			additionalLabels: file.AdditionalLabels, wantHeader: file.WantHeader, wantLocal: file.WantLocal,
		})
	}
	return out
}

func TestLocalFromNode(t *testing.T) {
	for _, s := range loadNodeSamples(t) {
		t.Run(s.name, func(t *testing.T) {
			b, err := proto.Marshal(s.node)
			if err != nil {
				t.Fatal(err)
			}
			n, err := NodeFromProto(b)
			if err != nil {
				t.Fatal(err)
			}
			if n.ID != s.node.GetId() || n.Region != s.node.GetLocality().GetRegion() ||
				n.Zone != s.node.GetLocality().GetZone() || !proto.Equal(n.Metadata, s.node.GetMetadata()) {
				t.Fatalf("NodeFromProto = %+v, want %v", n, s.node)
			}
			l, err := LocalFromNode(n, EncodeOptions{AdditionalLabels: s.additionalLabels})
			if err != nil {
				t.Fatal(err)
			}
			if l.ID != s.node.GetId() {
				t.Errorf("ID = %q", l.ID)
			}
			if l.Workload != s.wantLocal {
				t.Errorf("Workload:\n got %+v\nwant %+v", l.Workload, s.wantLocal)
			}
			// Byte-exact against the hand-written expectation, encoded without our encoder.
			want := base64.StdEncoding.EncodeToString(wireStructJSON(s.wantHeader, sortedKeys))
			if l.HeaderValue != want {
				got, _ := DecodeStruct(l.HeaderValue)
				t.Errorf("HeaderValue:\n got %s\nwant %s\n decoded: %v", l.HeaderValue, want, got)
			}
			checkGolden(t, filepath.Join("testdata/nodes", s.name+".header"), l.HeaderValue)
		})
	}
}

func TestNewLocalErrors(t *testing.T) {
	meta, _ := structpb.NewStruct(map[string]any{"NAMESPACE": 7})
	if _, err := NewLocal("id", meta, EncodeOptions{}); !errors.Is(err, ErrShape) {
		t.Errorf("got %v, want ErrShape", err)
	}
	// An empty node still yields a decodable value: LABELS is always sent.
	l, err := NewLocal("", nil, EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := DecodeStruct(l.HeaderValue); err != nil || len(s.GetFields()) != 1 || s.GetFields()[KeyLabels] == nil {
		t.Errorf("empty node header = %v, %v", s, err)
	}
}

func TestNodeFromProtoWire(t *testing.T) {
	meta := func(k, v string) []byte {
		b, _ := proto.Marshal(&structpb.Struct{Fields: map[string]*structpb.Value{k: structpb.NewStringValue(v)}})
		return b
	}
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, "old-id")
	b = protowire.AppendTag(b, 2, protowire.BytesType) // cluster: skipped
	b = protowire.AppendString(b, "c")
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendBytes(b, meta("NAME", "a"))
	b = protowire.AppendTag(b, 13, protowire.VarintType) // unknown varint: skipped
	b = protowire.AppendVarint(b, 99)
	b = protowire.AppendTag(b, 3, protowire.BytesType) // second metadata merges
	b = protowire.AppendBytes(b, meta("NAMESPACE", "ns"))
	b = protowire.AppendTag(b, 1, protowire.BytesType) // last id wins
	b = protowire.AppendString(b, "id")
	n, err := NodeFromProto(b)
	if err != nil {
		t.Fatal(err)
	}
	if n.ID != "id" || n.Metadata.GetFields()["NAME"].GetStringValue() != "a" ||
		n.Metadata.GetFields()["NAMESPACE"].GetStringValue() != "ns" {
		t.Errorf("got %+v", n)
	}

	for name, bad := range map[string][]byte{
		"truncated":     b[:len(b)-1],
		"bad tag":       {0x00},
		"bad metadata":  protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), []byte{0x0a, 0x05}),
		"bad locality":  protowire.AppendBytes(protowire.AppendTag(nil, 4, protowire.BytesType), []byte{0x0a}),
		"bad fixed32":   {0x15, 0x01},
		"length beyond": {0x0a, 0x10, 'a'},
	} {
		if _, err := NodeFromProto(bad); !errors.Is(err, ErrProto) {
			t.Errorf("%s: got %v, want ErrProto", name, err)
		}
	}
	if n, err := NodeFromProto(nil); err != nil || n.Metadata == nil {
		t.Errorf("empty node: %+v, %v", n, err)
	}
}
