package httpstats

import (
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

func anyOf(s *structpb.Struct) (*anypb.Any, error) { return anypb.New(s) }
