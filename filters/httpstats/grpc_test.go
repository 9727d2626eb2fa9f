package httpstats

import "testing"

// FuzzGRPCFramesFeed: Envoy hands the body over in chunks of any size, so
// feeding the same bytes in any split must count the same messages and leave
// the same partial state as feeding them at once.
func FuzzGRPCFramesFeed(f *testing.F) {
	frame := func(n int) []byte {
		b := []byte{0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
		return append(b, make([]byte, n)...)
	}
	two := append(frame(3), frame(0)...)
	f.Add(two, []byte{1, 2, 3})
	f.Add(append(two, frame(300)...), []byte{4, 0, 255, 7})
	f.Add([]byte{0, 0, 0}, []byte{1})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 9, 9}, []byte{2, 2})
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		var whole grpcFrames
		whole.feed(data)
		var split grpcFrames
		rest := data
		for _, c := range cuts {
			n := int(c) % (len(rest) + 1)
			split.feed(rest[:n])
			rest = rest[n:]
		}
		split.feed(rest)
		if split != whole {
			t.Fatalf("split %v by %v: %+v, whole: %+v", data, cuts, split, whole)
		}
	})
}

func TestGRPCFramesCount(t *testing.T) {
	for _, c := range []struct {
		name string
		data []byte
		want uint64
	}{
		{"empty", nil, 0},
		{"one empty message", []byte{0, 0, 0, 0, 0}, 1},
		{"partial header", []byte{0, 0, 0}, 0},
		{"two", []byte{0, 0, 0, 0, 1, 'x', 1, 0, 0, 0, 0}, 2},
		{"header only, payload pending", []byte{0, 0, 0, 1, 0}, 1},
	} {
		var g grpcFrames
		g.feed(c.data)
		if g.count != c.want {
			t.Errorf("%s: count %d, want %d", c.name, g.count, c.want)
		}
	}
}

func TestGRPCStatusFallback(t *testing.T) {
	for _, c := range []struct {
		name     string
		trailers *headers
		headers  *headers
		code     uint32
		hasCode  bool
		want     string
	}{
		{"trailers win", newHeaders("grpc-status", "5"), newHeaders("grpc-status", "3"), 200, true, "5"},
		{"trailers-only response", nil, newHeaders("grpc-status", "3"), 200, true, "3"},
		{"no grpc-status: from HTTP 200", nil, newHeaders(), 200, true, "2"},
		{"from HTTP 503", nil, newHeaders(), 503, true, "14"},
		{"from HTTP 404", nil, nil, 404, true, "12"},
		{"from HTTP 400", nil, nil, 400, true, "13"},
		{"from HTTP 401", nil, nil, 401, true, "16"},
		{"from HTTP 403", nil, nil, 403, true, "7"},
		{"from HTTP 429", nil, nil, 429, true, "14"},
		{"no code", nil, nil, 0, false, ""},
	} {
		var tr *trailers
		if c.trailers != nil {
			tr = &trailers{Headers: c.trailers}
		}
		var got string
		switch {
		case tr != nil && c.headers != nil:
			got = grpcStatus(*tr, c.headers, c.code, c.hasCode)
		case c.headers != nil:
			got = grpcStatus(nil, c.headers, c.code, c.hasCode)
		default:
			got = grpcStatus(nil, nil, c.code, c.hasCode)
		}
		if got != c.want {
			t.Errorf("%s: %q, want %q (Grpc::Common::getGrpcStatus(trailers, headers, info))", c.name, got, c.want)
		}
	}
}

// TestIsGRPCRequest: Envoy's Grpc::Common::isGrpcRequestHeaders
// (source/common/grpc/common.cc), which Istio's stats filter uses for
// request_protocol: a :path and content-type "application/grpc" or
// "application/grpc+...". gRPC-Web is not gRPC.
func TestIsGRPCRequest(t *testing.T) {
	for _, tc := range []struct {
		kv   []string
		want bool
	}{
		{[]string{":path", "/s/M", "content-type", "application/grpc"}, true},
		{[]string{":path", "/s/M", "content-type", "application/grpc+proto"}, true},
		{[]string{":path", "/s/M", "content-type", "application/grpc-web"}, false},
		{[]string{":path", "/s/M", "content-type", "application/grpc-web+proto"}, false},
		{[]string{":path", "/s/M", "content-type", "application/grpcx"}, false},
		{[]string{":path", "/s/M", "content-type", "application/json"}, false},
		{[]string{":path", "/s/M"}, false},
		{[]string{"content-type", "application/grpc"}, false}, // CONNECT: no :path
	} {
		for _, copied := range []bool{false, true} {
			r := headerReader{h: newHeaders(tc.kv...)}
			if copied {
				r.kv, r.copied = tc.kv, true
			}
			if got := isGRPCRequest(&r); got != tc.want {
				t.Errorf("%v (copied %v): %v, want %v", tc.kv, copied, got, tc.want)
			}
		}
	}
}
