package peer

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// The seed corpus lives in testdata/fuzz/<FuzzName>/ (go test reads it on
// every plain run too); `go test -run TestFuzzSeeds -update` rewrites the
// seed-* files from the golden samples.

func FuzzDecode(f *testing.F) {
	f.Add("")
	f.Add("=")
	f.Add("CgA=")
	f.Fuzz(func(t *testing.T, value string) {
		w, err := Decode(value)
		if err != nil {
			if w != nil {
				t.Fatal("workload with an error")
			}
			for _, typed := range []error{ErrEmpty, ErrTooLarge, ErrBase64, ErrProto, ErrShape} {
				if errors.Is(err, typed) {
					return
				}
			}
			t.Fatalf("untyped error %v", err)
		}
		// Padding is optional.
		if trimmed := strings.TrimRight(value, "="); trimmed != value {
			w2, err := Decode(trimmed)
			if err != nil || *w2 != *w {
				t.Fatalf("unpadded %q: %+v, %v; padded gave %+v", trimmed, w2, err, w)
			}
		}
		// Re-encoding what was read reads back the same.
		s, err := DecodeStruct(value)
		if err != nil {
			t.Fatalf("Decode ok but DecodeStruct: %v", err)
		}
		enc, err := Encode(s)
		if err != nil {
			t.Fatal(err)
		}
		if len(enc) > MaxHeaderLen {
			return
		}
		w3, err := Decode(enc)
		if err != nil || *w3 != *w {
			t.Fatalf("re-encoded: %+v, %v; want %+v", w3, err, w)
		}
	})
}

func FuzzWorkloadFromStruct(f *testing.F) {
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &structpb.Struct{}
		if proto.Unmarshal(data, s) != nil {
			return
		}
		w, err := WorkloadFromStruct(s)
		if err != nil {
			if w != nil || !errors.Is(err, ErrShape) {
				t.Fatalf("got %v, %v; want nil, ErrShape", w, err)
			}
			return
		}
		// What we would send for this workload reads back the same.
		enc, err := Encode(headerStruct(w, nil, nil))
		if err != nil {
			t.Fatal(err)
		}
		if len(enc) > MaxHeaderLen {
			return
		}
		got, err := Decode(enc)
		if err != nil {
			t.Fatal(err)
		}
		want := Workload{
			Name: w.Name, Instance: w.Instance, Namespace: w.Namespace,
			CanonicalService: w.CanonicalService, CanonicalRevision: w.CanonicalRevision,
			App: w.App, Version: w.Version, Cluster: w.Cluster, Identity: w.Identity,
			Region: w.Region, Zone: w.Zone,
		}
		// OWNER is rebuilt, so it and what derives from it are not compared.
		got.Owner = ""
		if w.Name == "" {
			got.Name = ""
		}
		if _, _, sa, ok := ParseSPIFFE(w.Identity); ok {
			want.ServiceAccount = sa
		}
		if *got != want {
			t.Fatalf("round trip:\n got %+v\nwant %+v", *got, want)
		}
	})
}

func TestFuzzSeeds(t *testing.T) {
	type seed struct {
		name  string
		value string
	}
	var seeds []seed
	for _, p := range loadPeerSamples(t) {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(p.s)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds,
			seed{p.name, base64.StdEncoding.EncodeToString(b)},
			seed{p.name + "-unpadded-shuffled", base64.RawStdEncoding.EncodeToString(wireStructJSON(p.raw, shuffledKeys(7)))},
		)
	}
	istio, err := os.ReadFile("testdata/istio-1.5-sample.header")
	if err != nil {
		t.Fatal(err)
	}
	seeds = append(seeds,
		seed{"istio-1.5-sample", strings.TrimSpace(string(istio))},
		seed{"wrong-type-name", structValue(t, `{"NAME":1,"LABELS":{"app":true}}`)},
		seed{"labels-list", structValue(t, `{"LABELS":[1,"a",null,{"x":[]}]}`)},
		seed{"nested-deep", structValue(t, `{"a":{"b":{"c":{"d":[[[{"e":null}]]]}}}}`)},
	)

	write := func(fuzzer, name, line string) {
		path := filepath.Join("testdata/fuzz", fuzzer, "seed-"+name)
		content := "go test fuzz v1\n" + line + "\n"
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		if got, err := os.ReadFile(path); err != nil || string(got) != content {
			t.Errorf("%s missing or stale (run with -update): %v", path, err)
		}
	}
	for _, s := range seeds {
		write("FuzzDecode", s.name, fmt.Sprintf("string(%q)", s.value))
		b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s.value, "="))
		if err != nil {
			t.Fatal(err)
		}
		write("FuzzWorkloadFromStruct", s.name, fmt.Sprintf("[]byte(%q)", b))
	}
}
