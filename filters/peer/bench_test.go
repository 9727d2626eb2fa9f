package peer

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

func benchValues(b *testing.B) map[string]string {
	b.Helper()
	out := map[string]string{}
	for _, p := range loadPeerSamples(b) {
		if p.name == "compact-1.24" || p.name == "full-1.8" {
			v, err := Encode(p.s)
			if err != nil {
				b.Fatal(err)
			}
			out[p.name] = v
		}
	}
	istio, err := os.ReadFile("testdata/istio-1.5-sample.header")
	if err != nil {
		b.Fatal(err)
	}
	out["istio-1.5-sample"] = strings.TrimSpace(string(istio))
	return out
}

// The per-request path once a peer is known.
func BenchmarkCacheHit(b *testing.B) {
	v := benchValues(b)["compact-1.24"]
	c := NewCache(0)
	id := "sidecar~10.244.0.12~reviews-v2-5b667bcbf8-xqzlp.bookinfo~bookinfo.svc.cluster.local"
	if _, _, err := c.Lookup(id, v); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, hit, _ := c.Lookup(id, v); !hit {
			b.Fatal("miss")
		}
	}
}

// A new peer: decode, insert, and now and then evict. Ids cycle through 64k
// distinct values against the default 500 entries, so nearly all miss.
func BenchmarkCacheMiss(b *testing.B) {
	ids := make([]string, 1<<16)
	for i := range ids {
		ids[i] = fmt.Sprintf("sidecar~10.%d.%d.%d~pod-%d.ns~ns.svc.cluster.local", i>>16, i>>8&255, i&255, i)
	}
	for name, v := range benchValues(b) {
		b.Run(name, func(b *testing.B) {
			c := NewCache(0)
			b.ReportAllocs()
			b.SetBytes(int64(len(v)))
			hits, i := 0, 0
			for b.Loop() {
				_, hit, err := c.Lookup(ids[i&(len(ids)-1)], v)
				if err != nil {
					b.Fatal(err)
				}
				if hit {
					hits++
				}
				i++
			}
			b.ReportMetric(float64(hits)/float64(i), "hits/op")
		})
	}
}

// Computing the local identity and header, once per filter config.
func BenchmarkEncodeLocal(b *testing.B) {
	var s nodeSample
	for _, n := range loadNodeSamples(b) {
		if n.name == "deployment-1.31" {
			s = n
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewLocal(s.node.GetId(), s.node.GetMetadata(), EncodeOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
