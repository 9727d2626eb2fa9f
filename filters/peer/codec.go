package peer

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// MaxHeaderLen caps an x-envoy-peer-metadata value (bytes of base64) that
// Decode accepts. A 1.24+ compact value is ~300 bytes and the largest
// 1.8–1.22 full values seen are ~2–3 KiB, so 8 KiB leaves room while bounding
// the work and memory a hostile peer can cause per header.
const MaxHeaderLen = 8 << 10

// Decode errors; test with errors.Is.
var (
	ErrEmpty    = errors.New("peer metadata: empty value")
	ErrTooLarge = fmt.Errorf("peer metadata: value longer than %d bytes", MaxHeaderLen)
	ErrBase64   = errors.New("peer metadata: not base64")
	ErrProto    = errors.New("peer metadata: not a google.protobuf.Struct")
	ErrShape    = errors.New("peer metadata: unexpected value type")
)

// Encode serializes s deterministically (map keys sorted, as Envoy's
// SetSerializationDeterministic does, so the bytes equal Istio's) and
// returns standard base64 with padding, as Istio sends it.
func Encode(s *structpb.Struct) (string, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// DecodeStruct parses an x-envoy-peer-metadata value: standard base64 with or
// without padding, then a google.protobuf.Struct with entries in any order.
// Unlike Envoy it rejects unknown protobuf fields, so that bytes that merely
// happen to parse are not taken for an empty peer.
func DecodeStruct(value string) (*structpb.Struct, error) {
	if len(value) > MaxHeaderLen {
		return nil, ErrTooLarge
	}
	// Istio decodes "without padding", which accepts both forms.
	raw := strings.TrimSuffix(strings.TrimSuffix(value, "="), "=")
	if raw == "" {
		return nil, ErrEmpty
	}
	// Go's decoder skips CR and LF; Envoy's does not, and neither may we, or
	// "\n" would read as an empty peer.
	if strings.ContainsAny(raw, "\r\n") {
		return nil, fmt.Errorf("%w: line break", ErrBase64)
	}
	b, err := base64.RawStdEncoding.DecodeString(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBase64, err)
	}
	s := &structpb.Struct{}
	if err := proto.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProto, err)
	}
	if structHasUnknown(s) {
		return nil, fmt.Errorf("%w: unknown fields", ErrProto)
	}
	return s, nil
}

// Decode parses an x-envoy-peer-metadata value into the peer's Workload.
// Errors wrap ErrEmpty, ErrTooLarge, ErrBase64, ErrProto or ErrShape.
func Decode(value string) (*Workload, error) {
	s, err := DecodeStruct(value)
	if err != nil {
		return nil, err
	}
	return WorkloadFromStruct(s)
}

// structHasUnknown walks the parsed tree, typed rather than through
// protoreflect.Range, which cost a third of a decode. The tree is bounded by
// MaxHeaderLen and protobuf's own recursion limit.
func structHasUnknown(s *structpb.Struct) bool {
	if s == nil {
		return false
	}
	if len(s.ProtoReflect().GetUnknown()) > 0 {
		return true
	}
	for _, v := range s.GetFields() {
		if valueHasUnknown(v) {
			return true
		}
	}
	return false
}

func valueHasUnknown(v *structpb.Value) bool {
	if v == nil {
		return false
	}
	if len(v.ProtoReflect().GetUnknown()) > 0 {
		return true
	}
	switch k := v.GetKind().(type) {
	case *structpb.Value_StructValue:
		return structHasUnknown(k.StructValue)
	case *structpb.Value_ListValue:
		if k.ListValue == nil {
			return false
		}
		if len(k.ListValue.ProtoReflect().GetUnknown()) > 0 {
			return true
		}
		for _, e := range k.ListValue.GetValues() {
			if valueHasUnknown(e) {
				return true
			}
		}
	}
	return false
}
