package telemetry

import (
	"math"
	"sort"
	"sync/atomic"
)

// Native (exponential-bucket) histograms, as Prometheus defines them: with
// schema s, bucket i holds values in (2^((i-1)/2^s), 2^(i/2^s)], and
// values at or below the zero threshold go to the zero bucket. Recorded
// values are integers (ms, bytes), so only 0 lands in the zero bucket and the
// positive keys run from 0 (value 1) to 64·2^s. Buckets are allocated an
// octave-sized chunk at a time, on first use.

const (
	MinNativeSchema = -4
	MaxNativeSchema = 8
	// NativeZeroThreshold is client_golang's default
	// (DefNativeHistogramZeroThreshold, 2^-128).
	NativeZeroThreshold = 2.938735877055719e-39
)

type nativeLayout struct {
	enabled   bool
	schema    int
	bounds    []float64 // schema > 0: the fractions 2^(j/2^s)/2 of one octave
	chunkBits int
	nChunks   int
}

// nativeFixedBytes is a histogram's chunk table with the default schema, the
// part of a native histogram that exists before any observation.
var nativeFixedBytes = int64(newNativeLayout(3).nChunks)*8 + 48

func newNativeLayout(schema int) nativeLayout {
	l := nativeLayout{enabled: true, schema: schema, chunkBits: max(schema, 3)}
	if schema > 0 {
		n := 1 << schema
		l.bounds = make([]float64, n)
		for j := range l.bounds {
			l.bounds[j] = math.Exp2(float64(j)/float64(n)) / 2
		}
	}
	l.nChunks = l.key(math.MaxUint64)>>l.chunkBits + 1
	return l
}

// key returns the bucket of v ≥ 1, as client_golang's histogram computes it.
func (l *nativeLayout) key(v uint64) int {
	frac, exp := math.Frexp(float64(v))
	if l.schema > 0 {
		return sort.SearchFloat64s(l.bounds, frac) + (exp-1)*len(l.bounds)
	}
	key := exp
	if frac == 0.5 {
		key--
	}
	offset := (1 << -l.schema) - 1
	return (key + offset) >> -l.schema
}

type nativeCounts struct {
	zero   atomic.Uint64
	chunks []atomic.Pointer[[]atomic.Uint64]
}

func (l *nativeLayout) newCounts() *nativeCounts {
	return &nativeCounts{chunks: make([]atomic.Pointer[[]atomic.Uint64], l.nChunks)}
}

func (n *nativeCounts) observe(l *nativeLayout, v uint64) {
	if v == 0 {
		n.zero.Add(1)
		return
	}
	k := l.key(v)
	c := n.chunks[k>>l.chunkBits].Load()
	if c == nil {
		fresh := make([]atomic.Uint64, 1<<l.chunkBits)
		// Two workers whose ids collide modulo the shard count may race here;
		// the loser uses the winner's chunk.
		if !n.chunks[k>>l.chunkBits].CompareAndSwap(nil, &fresh) {
			c = n.chunks[k>>l.chunkBits].Load()
		} else {
			c = &fresh
		}
	}
	(*c)[k&(1<<l.chunkBits-1)].Add(1)
}

// addTo adds n's counts to the dense accumulator acc (indexed by key) and
// returns the zero count.
func (n *nativeCounts) addTo(l *nativeLayout, acc []uint64) uint64 {
	for ci := range n.chunks {
		c := n.chunks[ci].Load()
		if c == nil {
			continue
		}
		base := ci << l.chunkBits
		for j := range *c {
			if v := (*c)[j].Load(); v != 0 {
				acc[base+j] += v
			}
		}
	}
	return n.zero.Load()
}

// spans turns dense per-key counts into Prometheus' spans and deltas:
// runs of buckets, gaps of up to two empty buckets included as zeros (as
// client_golang does, since a new span costs more than two zero deltas).
func nativeSpans(acc []uint64) (spans []nativeSpan, deltas []int64) {
	var prev int64
	last := -1 // key of the last bucket written
	for k, v := range acc {
		if v == 0 {
			continue
		}
		switch {
		case last >= 0 && k-last <= 3:
			for z := last + 1; z < k; z++ {
				deltas = append(deltas, -prev)
				prev = 0
			}
			spans[len(spans)-1].length += uint32(k - last)
		case last < 0:
			spans = append(spans, nativeSpan{offset: int32(k), length: 1})
		default:
			spans = append(spans, nativeSpan{offset: int32(k - last - 1), length: 1})
		}
		deltas = append(deltas, int64(v)-prev)
		prev = int64(v)
		last = k
	}
	return spans, deltas
}

type nativeSpan struct {
	offset int32
	length uint32
}
