package peer

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

var update = flag.Bool("update", false, "rewrite golden files and the fuzz seed corpus")

// peerSample is a testdata/peers/*.json file: a Struct as some Istio release
// sends it and the Workload a receiver must read from it.
type peerSample struct {
	name   string
	raw    json.RawMessage // the Struct as JSON
	s      *structpb.Struct
	want   Workload
	golden string // path of the .header golden file
}

func loadPeerSamples(t testing.TB) []peerSample {
	t.Helper()
	files, err := filepath.Glob("testdata/peers/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no peer samples: %v", err)
	}
	var out []peerSample
	for _, f := range files {
		doc, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var file struct {
			Struct json.RawMessage
			Want   Workload
		}
		if err := json.Unmarshal(doc, &file); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		s := &structpb.Struct{}
		if err := protojson.Unmarshal(file.Struct, s); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		out = append(out, peerSample{
			name: name, raw: file.Struct, s: s, want: file.Want,
			golden: strings.TrimSuffix(f, ".json") + ".header",
		})
	}
	return out
}

func checkGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if got != strings.TrimSpace(string(want)) {
		t.Errorf("%s:\n got %s\nwant %s", path, got, want)
	}
}

func TestEncodeMatchesWireFormat(t *testing.T) {
	for _, p := range loadPeerSamples(t) {
		t.Run(p.name, func(t *testing.T) {
			got, err := Encode(p.s)
			if err != nil {
				t.Fatal(err)
			}
			// Byte-exact against an encoding built without our encoder.
			want := base64.StdEncoding.EncodeToString(wireStructJSON(p.raw, sortedKeys))
			if got != want {
				t.Errorf("Encode differs from the deterministic wire encoding:\n got %s\nwant %s", got, want)
			}
			checkGolden(t, p.golden, got)
		})
	}
}

func TestDecodeGoldenPeers(t *testing.T) {
	padded := 0
	for _, p := range loadPeerSamples(t) {
		t.Run(p.name, func(t *testing.T) {
			ours, err := Encode(p.s)
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasSuffix(ours, "=") {
				padded++
			}
			values := map[string]string{"ours": ours}
			for name, order := range map[string]keyOrder{
				"sorted": sortedKeys, "reversed": reversedKeys, "shuffled": shuffledKeys(uint64(len(p.name))),
			} {
				b := wireStructJSON(p.raw, order)
				values[name+"/padded"] = base64.StdEncoding.EncodeToString(b)
				values[name+"/unpadded"] = base64.RawStdEncoding.EncodeToString(b)
			}
			for name, v := range values {
				w, err := Decode(v)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if *w != p.want {
					t.Errorf("%s:\n got %+v\nwant %+v", name, *w, p.want)
				}
				s, err := DecodeStruct(v)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if !proto.Equal(s, p.s) {
					t.Errorf("%s: Struct differs:\n got %v\nwant %v", name, s, p.s)
				}
			}
		})
	}
	if padded == 0 {
		t.Error("no sample needs base64 padding: the padded/unpadded cases prove nothing")
	}
}

// The literal is SampleIstioHeader from istio/proxy
// source/extensions/filters/http/peer_metadata/filter_test.cc: produced by a
// real Istio 1.5 proxy, unpadded and not in sorted key order.
func TestDecodeIstioSample(t *testing.T) {
	b, err := os.ReadFile("testdata/istio-1.5-sample.header")
	if err != nil {
		t.Fatal(err)
	}
	v := strings.TrimSpace(string(b))
	if len(v)%4 == 0 {
		t.Fatal("sample expected unpadded")
	}
	want := Workload{
		Name:              "productpage-v1",
		Instance:          "productpage-v1-84975bc778-pxz2w",
		Namespace:         "default",
		CanonicalService:  "productpage-v1",
		CanonicalRevision: "version-1",
		App:               "productpage",
		Version:           "v1",
		Cluster:           "client-cluster",
		Owner:             "kubernetes://apis/apps/v1/namespaces/default/deployments/productpage-v1",
		ServiceAccount:    "bookinfo-productpage",
		IstioVersion:      "1.5-dev",
		MeshID:            "mesh",
	}
	for _, v := range []string{v, v + strings.Repeat("=", (4-len(v)%4)%4)} {
		w, err := Decode(v)
		if err != nil {
			t.Fatal(err)
		}
		if *w != want {
			t.Errorf("got %+v\nwant %+v", *w, want)
		}
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func structValue(t testing.TB, doc string) string {
	t.Helper()
	return b64(wireStructJSON([]byte(doc), sortedKeys))
}

func TestDecodeErrors(t *testing.T) {
	valid := structValue(t, `{"NAME":"a"}`)
	validBytes, _ := base64.StdEncoding.DecodeString(valid)
	unknownField := protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), 5)
	badUTF8 := wireStruct(map[string]any{"NAME": "ok"}, sortedKeys)
	badUTF8 = append(badUTF8[:len(badUTF8)-2], 0xff, 0xfe)

	for _, tc := range []struct {
		name  string
		value string
		want  error
	}{
		{"empty", "", ErrEmpty},
		{"padding only", "==", ErrEmpty},
		{"too large", strings.Repeat("A", MaxHeaderLen+1), ErrTooLarge},
		{"at the cap is decoded", strings.Repeat("A", MaxHeaderLen), ErrProto}, // zero bytes: field number 0
		{"not base64", "!!!!", ErrBase64},
		{"url alphabet", strings.ReplaceAll(strings.ReplaceAll(valid, "+", "-"), "/", "_") + "-_", ErrBase64},
		{"bad length", "Q", ErrBase64},
		{"line break", valid[:4] + "\r\n" + valid[4:], ErrBase64},
		{"three pads", valid[:len(valid)-2] + "===", ErrBase64},
		{"inner padding", "QQ==QQ==", ErrBase64},
		{"truncated struct", b64(validBytes[:len(validBytes)-1]), ErrProto},
		{"text", b64([]byte("hello, world")), ErrProto},
		{"unknown field", b64(unknownField), ErrProto},
		{"empty labels only", structValue(t, `{"LABELS":{}}`), nil},
		{"invalid utf-8", b64(badUTF8), ErrProto},
		{"NAME number", structValue(t, `{"NAME":1}`), ErrShape},
		{"NAMESPACE bool", structValue(t, `{"NAMESPACE":true}`), ErrShape},
		{"WORKLOAD_NAME struct", structValue(t, `{"WORKLOAD_NAME":{"a":"b"}}`), ErrShape},
		{"OWNER list", structValue(t, `{"OWNER":["x"]}`), ErrShape},
		{"IDENTITY number", structValue(t, `{"IDENTITY":3}`), ErrShape},
		{"CLUSTER_ID list", structValue(t, `{"CLUSTER_ID":[]}`), ErrShape},
		{"LABELS string", structValue(t, `{"LABELS":"app=x"}`), ErrShape},
		{"LABELS list", structValue(t, `{"LABELS":[{"app":"x"}]}`), ErrShape},
		{"app number", structValue(t, `{"LABELS":{"app":1}}`), ErrShape},
		{"canonical-name bool", structValue(t, `{"LABELS":{"service.istio.io/canonical-name":false}}`), ErrShape},
		{"k8s version struct", structValue(t, `{"LABELS":{"app.kubernetes.io/version":{}}}`), ErrShape},
		{"nulls are absent", structValue(t, `{"NAME":null,"LABELS":null}`), nil},
		{"unread label of any type", structValue(t, `{"LABELS":{"x":1,"y":[true]}}`), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := Decode(tc.value)
			if tc.want == nil {
				if err != nil || w == nil {
					t.Fatalf("got %v, %v; want a workload", w, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if w != nil {
				t.Errorf("got a workload with an error: %+v", w)
			}
		})
	}
}

// A Value carrying an unknown field is not a Struct a proxy would send.
func TestDecodeUnknownNestedField(t *testing.T) {
	var v []byte
	v = protowire.AppendTag(v, 3, protowire.BytesType)
	v = protowire.AppendString(v, "x")
	v = protowire.AppendTag(v, 9, protowire.VarintType)
	v = protowire.AppendVarint(v, 1)
	var e []byte
	e = protowire.AppendTag(e, 1, protowire.BytesType)
	e = protowire.AppendString(e, "NAME")
	e = protowire.AppendTag(e, 2, protowire.BytesType)
	e = protowire.AppendBytes(e, v)
	b := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), e)
	if _, err := Decode(b64(b)); !errors.Is(err, ErrProto) {
		t.Fatalf("got %v, want ErrProto", err)
	}
}
