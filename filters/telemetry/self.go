package telemetry

import (
	"sort"
	"sync"
	"sync/atomic"
)

// SelfMetrics are leanmesh's own counters (panics recovered, malformed peer
// headers, rejected configs...). Callers fetch a counter once and keep the
// pointer; creation takes a lock, counting is one atomic add.
type SelfMetrics struct {
	mu       sync.Mutex
	counters map[selfKey]*atomic.Uint64
}

// Self is the process-wide set: one Go runtime per Envoy process, one proxy.
var Self = newSelfMetrics()

type selfKey struct{ name, label, labelValue string }

func newSelfMetrics() *SelfMetrics {
	return &SelfMetrics{counters: map[selfKey]*atomic.Uint64{}}
}

// Counter returns the counter name{label="value"} (label may be empty),
// creating it at zero.
func (s *SelfMetrics) Counter(name, label, value string) *atomic.Uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := selfKey{name, label, value}
	c := s.counters[k]
	if c == nil {
		c = new(atomic.Uint64)
		s.counters[k] = c
	}
	return c
}

type selfSample struct {
	selfKey
	value uint64
}

func (s *SelfMetrics) snapshot() []selfSample {
	s.mu.Lock()
	out := make([]selfSample, 0, len(s.counters))
	for k, c := range s.counters {
		out = append(out, selfSample{k, c.Load()})
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.name != b.name {
			return a.name < b.name
		}
		if a.label != b.label {
			return a.label < b.label
		}
		return a.labelValue < b.labelValue
	})
	return out
}
