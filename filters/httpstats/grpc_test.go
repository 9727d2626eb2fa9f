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
