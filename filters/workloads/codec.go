package workloads

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// TypeURL names the resources of the stream. The payload is a
// google.protobuf.Struct (see PROTOCOL.md): a well-known message, so neither
// side needs generated code, while the type URL keeps the resources apart
// from any other xDS type.
const TypeURL = "type.googleapis.com/leanmesh.workload.v1.Workload"

// MaxResourceBytes bounds one encoded resource; eight short strings fit in
// well under 4 KiB.
const MaxResourceBytes = 4096

// Struct field names, shared with the controller.
const (
	FieldName              = "name"
	FieldNamespace         = "namespace"
	FieldCanonicalService  = "canonical_service"
	FieldCanonicalRevision = "canonical_revision"
	FieldApp               = "app"
	FieldVersion           = "version"
	FieldCluster           = "cluster"
	FieldServiceAccount    = "service_account"
)

func (w *Workload) fields() [8]struct {
	key string
	ptr *string
} {
	return [8]struct {
		key string
		ptr *string
	}{
		{FieldName, &w.Name}, {FieldNamespace, &w.Namespace},
		{FieldCanonicalService, &w.CanonicalService}, {FieldCanonicalRevision, &w.CanonicalRevision},
		{FieldApp, &w.App}, {FieldVersion, &w.Version},
		{FieldCluster, &w.Cluster}, {FieldServiceAccount, &w.ServiceAccount},
	}
}

// ToStruct encodes w; empty fields are omitted.
func (w Workload) ToStruct() *structpb.Struct {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for _, f := range w.fields() {
		if *f.ptr != "" {
			s.Fields[f.key] = structpb.NewStringValue(*f.ptr)
		}
	}
	return s
}

// FromStruct decodes a workload. Unknown fields are ignored (a newer
// controller may add some); a known field that is not a string is an error.
func FromStruct(s *structpb.Struct) (Workload, error) {
	var w Workload
	for _, f := range w.fields() {
		v, ok := s.GetFields()[f.key]
		if !ok {
			continue
		}
		sv, ok := v.GetKind().(*structpb.Value_StringValue)
		if !ok {
			return Workload{}, fmt.Errorf("field %s is not a string", f.key)
		}
		*f.ptr = sv.StringValue
	}
	return w, nil
}

// DecodeAny decodes one resource payload.
func DecodeAny(a *anypb.Any) (Workload, error) {
	if a == nil {
		return Workload{}, fmt.Errorf("missing resource")
	}
	if a.GetTypeUrl() != TypeURL {
		return Workload{}, fmt.Errorf("resource type %q, want %s", truncate(a.GetTypeUrl()), TypeURL)
	}
	if len(a.GetValue()) > MaxResourceBytes {
		return Workload{}, fmt.Errorf("resource of %d bytes exceeds %d", len(a.GetValue()), MaxResourceBytes)
	}
	s := &structpb.Struct{}
	if err := proto.Unmarshal(a.GetValue(), s); err != nil {
		return Workload{}, fmt.Errorf("resource is not a google.protobuf.Struct: %v", err)
	}
	return FromStruct(s)
}

// EncodeAny is DecodeAny's inverse (tests, tools).
func EncodeAny(w Workload) (*anypb.Any, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(w.ToStruct())
	if err != nil {
		return nil, err
	}
	return &anypb.Any{TypeUrl: TypeURL, Value: b}, nil
}
