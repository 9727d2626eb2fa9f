package peer

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
)

// This file encodes google.protobuf.Struct field by field from a JSON
// document, without structpb or proto.Marshal, so that vectors built here
// check the package's encoder and decoder against the wire format itself:
//
//	Struct    { map<string, Value> fields = 1; }   // entry: key = 1, value = 2
//	Value     { null_value = 1 (varint); number_value = 2 (fixed64);
//	            string_value = 3; bool_value = 4 (varint);
//	            struct_value = 5; list_value = 6; }
//	ListValue { repeated Value values = 1; }
//
// Deterministic serialization (Istio's serializeToStringDeterministic, Go's
// MarshalOptions.Deterministic) writes map entries sorted by key.

type keyOrder func(keys []string) []string

func sortedKeys(keys []string) []string { slices.Sort(keys); return keys }

func reversedKeys(keys []string) []string {
	slices.Sort(keys)
	slices.Reverse(keys)
	return keys
}

func shuffledKeys(seed uint64) keyOrder {
	r := rand.New(rand.NewPCG(seed, seed))
	return func(keys []string) []string {
		slices.Sort(keys)
		r.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
		return keys
	}
}

// wireStructJSON encodes a JSON object as a serialized Struct.
func wireStructJSON(doc []byte, order keyOrder) []byte {
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		panic(err)
	}
	return wireStruct(m, order)
}

func wireStruct(m map[string]any, order keyOrder) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	var b []byte
	for _, k := range order(keys) {
		var e []byte
		e = protowire.AppendTag(e, 1, protowire.BytesType)
		e = protowire.AppendString(e, k)
		e = protowire.AppendTag(e, 2, protowire.BytesType)
		e = protowire.AppendBytes(e, wireValue(m[k], order))
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, e)
	}
	return b
}

func wireValue(v any, order keyOrder) []byte {
	var b []byte
	switch v := v.(type) {
	case nil:
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, 0)
	case float64:
		b = protowire.AppendTag(b, 2, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(v))
	case string:
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendString(b, v)
	case bool:
		b = protowire.AppendTag(b, 4, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeBool(v))
	case map[string]any:
		b = protowire.AppendTag(b, 5, protowire.BytesType)
		b = protowire.AppendBytes(b, wireStruct(v, order))
	case []any:
		var l []byte
		for _, e := range v {
			l = protowire.AppendTag(l, 1, protowire.BytesType)
			l = protowire.AppendBytes(l, wireValue(e, order))
		}
		b = protowire.AppendTag(b, 6, protowire.BytesType)
		b = protowire.AppendBytes(b, l)
	default:
		panic(fmt.Sprintf("unexpected JSON value %T", v))
	}
	return b
}
