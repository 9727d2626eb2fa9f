package envoyhost

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// maxPropDepth bounds the walk into unset nested messages.
const maxPropDepth = 5

// MessageProperties lists every property path under prefix that Envoy's
// golang filter can answer for message m, with the answer, following
// Filter::getStringPropertyInternal/serializeStringValue (golang_filter.cc)
// over CEL's protobuf view (cel-cpp CelProtoWrapper/FieldBackedMap/List):
//   - a message is its serialized bytes; its fields are children (unset
//     fields read as defaults)
//   - maps and lists (repeated fields, Struct, ListValue) fail with
//     CAPISerializationFailure; string map keys and list indexes are children
//   - Struct/Value/wrappers are unwrapped: numbers as absl::StrCat(double)
//     (%.6g), bools as true/false, null fails to serialize
//   - ints in decimal, enums as their number, Duration/Timestamp in absl
//     format
func MessageProperties(prefix string, m proto.Message) ([]Prop, error) {
	var out []Prop
	if err := walkMessage(prefix, m.ProtoReflect(), 0, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func addProp(out *[]Prop, path string, status int, v []byte) {
	*out = append(*out, Prop{Path: path, Status: status, Value: v})
}

func walkMessage(path string, m protoreflect.Message, depth int, out *[]Prop) error {
	if handled, err := walkWellKnown(path, m, out); handled || err != nil {
		return err
	}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(m.Interface())
	if err != nil {
		return fmt.Errorf("envoyhost: marshal %s: %w", path, err)
	}
	addProp(out, path, CAPIOK, raw)
	if depth >= maxPropDepth {
		return nil
	}
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		p := path + "." + string(fd.Name())
		switch {
		case fd.IsMap():
			addProp(out, p, CAPISerializationFailure, nil)
			if fd.MapKey().Kind() != protoreflect.StringKind {
				continue // CEL looks map keys up as strings
			}
			var err error
			m.Get(fd).Map().Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
				err = walkValue(p+"."+k.String(), fd.MapValue(), v, true, depth+1, out)
				return err == nil
			})
			if err != nil {
				return err
			}
		case fd.IsList():
			addProp(out, p, CAPISerializationFailure, nil)
			l := m.Get(fd).List()
			for j := 0; j < l.Len(); j++ {
				if err := walkValue(p+"."+strconv.Itoa(j), fd, l.Get(j), true, depth+1, out); err != nil {
					return err
				}
			}
		default:
			if err := walkValue(p, fd, m.Get(fd), m.Has(fd), depth+1, out); err != nil {
				return err
			}
		}
	}
	return nil
}

func walkValue(path string, fd protoreflect.FieldDescriptor, v protoreflect.Value, set bool, depth int, out *[]Prop) error {
	switch fd.Kind() {
	case protoreflect.StringKind:
		addProp(out, path, CAPIOK, []byte(v.String()))
	case protoreflect.BytesKind:
		addProp(out, path, CAPIOK, v.Bytes())
	case protoreflect.BoolKind:
		addProp(out, path, CAPIOK, []byte(strconv.FormatBool(v.Bool())))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		addProp(out, path, CAPIOK, []byte(strconv.FormatInt(v.Int(), 10)))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		addProp(out, path, CAPIOK, []byte(strconv.FormatUint(v.Uint(), 10)))
	case protoreflect.EnumKind:
		addProp(out, path, CAPIOK, []byte(strconv.FormatInt(int64(v.Enum()), 10)))
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		addProp(out, path, CAPIOK, []byte(formatDouble(v.Float())))
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if !set && isWrapper(fd.Message().FullName()) {
			addProp(out, path, CAPISerializationFailure, nil) // unset wrapper: CEL null
			return nil
		}
		return walkMessage(path, v.Message(), depth, out)
	}
	return nil
}

func isWrapper(n protoreflect.FullName) bool {
	return strings.HasPrefix(string(n), "google.protobuf.") && strings.HasSuffix(string(n), "Value") &&
		n != "google.protobuf.Value" && n != "google.protobuf.ListValue"
}

// absl::StrCat(double): six significant digits, like %.6g
func formatDouble(f float64) string { return strconv.FormatFloat(f, 'g', 6, 64) }

func walkWellKnown(path string, m protoreflect.Message, out *[]Prop) (bool, error) {
	switch m.Descriptor().FullName() {
	case "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue":
		var v *structpb.Value
		switch x := m.Interface().(type) {
		case *structpb.Struct:
			v = structpb.NewStructValue(x)
		case *structpb.Value:
			v = x
		case *structpb.ListValue:
			v = structpb.NewListValue(x)
		default: // dynamic message: round trip
			raw, err := proto.Marshal(m.Interface())
			if err != nil {
				return true, err
			}
			v = &structpb.Value{}
			switch m.Descriptor().FullName() {
			case "google.protobuf.Struct":
				s := &structpb.Struct{}
				err = proto.Unmarshal(raw, s)
				v = structpb.NewStructValue(s)
			case "google.protobuf.ListValue":
				l := &structpb.ListValue{}
				err = proto.Unmarshal(raw, l)
				v = structpb.NewListValue(l)
			default:
				err = proto.Unmarshal(raw, v)
			}
			if err != nil {
				return true, err
			}
		}
		walkStructValue(path, v, out)
		return true, nil
	case "google.protobuf.Duration":
		d := &durationpb.Duration{}
		if err := remarshal(m, d); err != nil {
			return true, err
		}
		addProp(out, path, CAPIOK, []byte(FormatDuration(d.AsDuration())))
		return true, nil
	case "google.protobuf.Timestamp":
		t := &timestamppb.Timestamp{}
		if err := remarshal(m, t); err != nil {
			return true, err
		}
		addProp(out, path, CAPIOK, []byte(FormatTime(t.AsTime())))
		return true, nil
	}
	if isWrapper(m.Descriptor().FullName()) {
		fd := m.Descriptor().Fields().ByName("value")
		if fd != nil {
			return true, walkValue(path, fd, m.Get(fd), true, maxPropDepth, out)
		}
	}
	return false, nil
}

func remarshal(m protoreflect.Message, dst proto.Message) error {
	raw, err := proto.Marshal(m.Interface())
	if err != nil {
		return err
	}
	return proto.Unmarshal(raw, dst)
}

func walkStructValue(path string, v *structpb.Value, out *[]Prop) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		addProp(out, path, CAPIOK, []byte(k.StringValue))
	case *structpb.Value_NumberValue:
		addProp(out, path, CAPIOK, []byte(formatDouble(k.NumberValue)))
	case *structpb.Value_BoolValue:
		addProp(out, path, CAPIOK, []byte(strconv.FormatBool(k.BoolValue)))
	case *structpb.Value_StructValue:
		addProp(out, path, CAPISerializationFailure, nil)
		for key, val := range k.StructValue.GetFields() {
			walkStructValue(path+"."+key, val, out)
		}
	case *structpb.Value_ListValue:
		addProp(out, path, CAPISerializationFailure, nil)
		for i, val := range k.ListValue.GetValues() {
			walkStructValue(path+"."+strconv.Itoa(i), val, out)
		}
	default: // null or unset
		addProp(out, path, CAPISerializationFailure, nil)
	}
}

// FormatDuration is absl::FormatDuration, which Envoy uses for CEL
// durations (e.g. request.duration): "1.5ms", "2s", "1h2m3.5s", "0".
func FormatDuration(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	var sb strings.Builder
	ns := d.Nanoseconds()
	if ns < 0 {
		sb.WriteByte('-')
		ns = -ns
	}
	frac := func(ip, f int64, digits int, unit string) {
		if ip == 0 && f == 0 {
			return
		}
		sb.WriteString(strconv.FormatInt(ip, 10))
		if f != 0 {
			s := fmt.Sprintf("%0*d", digits, f)
			sb.WriteByte('.')
			sb.WriteString(strings.TrimRight(s, "0"))
		}
		sb.WriteString(unit)
	}
	switch {
	case ns < 1000:
		frac(ns, 0, 0, "ns")
	case ns < 1000000:
		frac(ns/1000, ns%1000, 3, "us")
	case ns < 1000000000:
		frac(ns/1000000, ns%1000000, 6, "ms")
	default:
		h := ns / int64(time.Hour)
		ns -= h * int64(time.Hour)
		m := ns / int64(time.Minute)
		ns -= m * int64(time.Minute)
		if h != 0 {
			sb.WriteString(strconv.FormatInt(h, 10) + "h")
		}
		if m != 0 {
			sb.WriteString(strconv.FormatInt(m, 10) + "m")
		}
		frac(ns/1e9, ns%1e9, 9, "s")
	}
	return sb.String()
}

// FormatTime is absl::FormatTime(t, UTC) (RFC3339 with trimmed nanos and
// "+00:00"), which Envoy uses for CEL timestamps (request.time).
func FormatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.999999999") + "+00:00"
}
