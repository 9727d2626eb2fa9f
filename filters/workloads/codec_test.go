package workloads

import (
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestCodec(t *testing.T) {
	good, _ := EncodeAny(wlA)
	cases := []struct {
		name    string
		any     *anypb.Any
		want    Workload
		wantErr bool
	}{
		{"round trip", good, wlA, false},
		{"empty struct", &anypb.Any{TypeUrl: TypeURL}, Workload{}, false},
		{"unknown fields ignored", mustAny(t, map[string]interface{}{"name": "x", "future": 3.0}), Workload{Name: "x"}, false},
		{"null field", mustAny(t, map[string]interface{}{"name": nil}), Workload{}, true},
		{"number field", mustAny(t, map[string]interface{}{"namespace": 1.0}), Workload{}, true},
		{"wrong type url", &anypb.Any{TypeUrl: "type.googleapis.com/google.protobuf.Struct", Value: good.Value}, Workload{}, true},
		{"not a struct", &anypb.Any{TypeUrl: TypeURL, Value: []byte{0xff, 0xff}}, Workload{}, true},
		{"too big", &anypb.Any{TypeUrl: TypeURL, Value: make([]byte, MaxResourceBytes+1)}, Workload{}, true},
		{"nil", nil, Workload{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeAny(tc.any)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("got %+v, %v", got, err)
			}
		})
	}
}

func mustAny(t *testing.T, m map[string]interface{}) *anypb.Any {
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	a, err := anypb.New(s)
	if err != nil {
		t.Fatal(err)
	}
	a.TypeUrl = TypeURL
	return a
}

// FuzzDecodeResponse: arbitrary bytes from the wire never panic, and what
// decodes either applies whole or is rejected whole.
func FuzzDecodeResponse(f *testing.F) {
	good, _ := EncodeAny(wlA)
	f.Add("10.0.0.1", good.Value, "10.0.0.2")
	f.Add("::1", []byte{0x0a, 0x00}, "")
	f.Fuzz(func(t *testing.T, name string, value []byte, removed string) {
		resp := &discoveryv3.DeltaDiscoveryResponse{
			TypeUrl:          TypeURL,
			Resources:        []*discoveryv3.Resource{{Name: name, Version: "1", Resource: &anypb.Any{TypeUrl: TypeURL, Value: value}}},
			RemovedResources: []string{removed},
		}
		tab := NewTable(8)
		d, err := DecodeResponse(resp)
		if err != nil {
			return
		}
		if err := tab.Apply(d); err != nil {
			if tab.Len() != 0 {
				t.Fatal("rejected delta left entries")
			}
			return
		}
		if tab.Len() != 1 {
			t.Fatalf("applied delta left %d entries", tab.Len())
		}
	})
}
