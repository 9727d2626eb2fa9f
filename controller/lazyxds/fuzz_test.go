package lazyxds

import "testing"

// FuzzNames: the authority and cluster parsers see attacker-controlled input.
func FuzzNames(f *testing.F) {
	for _, s := range []string{"reviews:9080", "[::1]:80", "outbound|80|v1|a.b.svc.cluster.local", "a..b", "x:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if h, p, ok := SplitAuthority(s); ok {
			if h == "" || p > 65535 {
				t.Fatalf("SplitAuthority(%q) = %q, %d", s, h, p)
			}
		}
		if h, p, ok := ParseCluster(s); ok && (h == "" || p == 0) {
			t.Fatalf("ParseCluster(%q) = %q, %d", s, h, p)
		}
	})
}

// FuzzSnapshot: a corrupt persisted snapshot must fail cleanly, never panic.
func FuzzSnapshot(f *testing.F) {
	f.Add([]byte(`{"v":1,"base":1,"hosts":["a"],"deps":[{"w":"ns/w","d":[[0,0,5]]}]}`))
	f.Add([]byte{0x1f, 0x8b, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := UnmarshalSnapshot(b)
		if err != nil {
			return
		}
		_ = NewGraph(Options{}).Restore(s)
	})
}
