package lazyxds

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
)

// SnapshotVersion is the current persistence format. Readers reject newer
// versions instead of guessing; a format change bumps it and keeps a decoder
// for the old one.
const SnapshotVersion = 1

// Snapshot is the persisted form of learned dependencies (format v1):
//
//	{"v":1,"base":<unix s>,"hosts":["a.ns.svc.cluster.local",...],
//	 "deps":[{"w":"ns/workload","d":[[hostIndex,firstSeen,lastSeen],...]},...]}
//
// Hosts are interned because most workloads share a few popular services;
// times are seconds relative to base to keep numbers short. Workloads and
// hosts are sorted so equal graphs give byte-equal snapshots (no spurious
// ConfigMap/status writes). Marshal gzips it; Unmarshal accepts both forms.
type Snapshot struct {
	Version int                `json:"v"`
	Base    int64              `json:"base"`
	Hosts   []string           `json:"hosts"`
	Deps    []SnapshotWorkload `json:"deps"`
}

// SnapshotWorkload holds one workload's dependencies.
type SnapshotWorkload struct {
	Workload string     `json:"w"` // "<namespace>/<name>"
	Deps     [][3]int64 `json:"d"` // [host index, first seen, last seen] (seconds after Base)
	// Seeded lists the host indexes whose origin is telemetry; absent means
	// every dependency came from an access log. Optional, so version 1
	// readers that predate it still read the snapshot (and see no origin).
	Seeded []int64 `json:"s,omitempty"`
}

// Snapshot captures every learned dependency.
func (g *Graph) Snapshot() Snapshot {
	g.mu.RLock()
	defer g.mu.RUnlock()
	s := Snapshot{Version: SnapshotVersion, Hosts: []string{}, Deps: []SnapshotWorkload{}}
	hostSet := map[string]struct{}{}
	base := int64(0)
	for _, ds := range g.deps {
		for h, t := range ds {
			hostSet[h] = struct{}{}
			if sec := t.first / 1e9; base == 0 || sec < base {
				base = sec
			}
		}
	}
	for h := range hostSet {
		s.Hosts = append(s.Hosts, h)
	}
	sort.Strings(s.Hosts)
	index := make(map[string]int64, len(s.Hosts))
	for i, h := range s.Hosts {
		index[h] = int64(i)
	}
	s.Base = base
	for k, ds := range g.deps {
		if len(ds) == 0 {
			continue
		}
		w := SnapshotWorkload{Workload: k.String()}
		for h, t := range ds {
			w.Deps = append(w.Deps, [3]int64{index[h], t.first/1e9 - base, t.last/1e9 - base})
			if t.origin == OriginTelemetry {
				w.Seeded = append(w.Seeded, index[h])
			}
		}
		sort.Slice(w.Deps, func(i, j int) bool { return w.Deps[i][0] < w.Deps[j][0] })
		slices.Sort(w.Seeded)
		s.Deps = append(s.Deps, w)
	}
	sort.Slice(s.Deps, func(i, j int) bool { return s.Deps[i].Workload < s.Deps[j].Workload })
	return s
}

// Restore merges a snapshot into the graph (earliest first-seen and latest
// last-seen win) and marks the restored workloads dirty. Dependencies may name
// workloads and services not seen yet; they render once those appear, and
// DropUnknown removes the ones that never do.
func (g *Graph) Restore(s Snapshot) error {
	if s.Version != SnapshotVersion {
		return fmt.Errorf("lazyxds snapshot: unsupported version %d (want %d)", s.Version, SnapshotVersion)
	}
	type dep struct {
		k    WorkloadKey
		host string
		t    depTimes
	}
	var all []dep
	for _, w := range s.Deps {
		w.Seeded = slices.Sorted(slices.Values(w.Seeded)) // hand-written snapshots may not be sorted
		ns, name, ok := strings.Cut(w.Workload, "/")
		if !ok || ns == "" || name == "" {
			return fmt.Errorf("lazyxds snapshot: bad workload %q", w.Workload)
		}
		for _, d := range w.Deps {
			if d[0] < 0 || d[0] >= int64(len(s.Hosts)) {
				return fmt.Errorf("lazyxds snapshot: workload %q: host index %d out of range", w.Workload, d[0])
			}
			t := depTimes{first: (s.Base + d[1]) * 1e9, last: (s.Base + d[2]) * 1e9}
			if _, seeded := slices.BinarySearch(w.Seeded, d[0]); seeded {
				t.origin = OriginTelemetry
			}
			all = append(all, dep{WorkloadKey{ns, name}, s.Hosts[d[0]], t})
		}
	}
	now := g.opts.Now().UnixNano()
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, d := range all {
		ds := g.deps[d.k]
		if ds == nil {
			ds = map[string]depTimes{}
			g.deps[d.k] = ds
		}
		if t, ok := ds[d.host]; ok {
			d.t.first = min(d.t.first, t.first)
			d.t.last = max(d.t.last, t.last)
			d.t.origin = t.origin // the graph's own record of where it came from wins
		} else {
			g.depsCount++
			addToSet(g.dependents, d.host, d.k)
		}
		ds[d.host] = d.t
		g.markDirty(d.k, now)
	}
	return nil
}

// Marshal encodes the snapshot as gzipped JSON (ConfigMap binaryData or a
// status field as base64). About 6–10 bytes per dependency after compression.
func (s Snapshot) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err := json.NewEncoder(zw).Encode(s); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// UnmarshalSnapshot decodes Marshal's output, or plain JSON written by hand.
func UnmarshalSnapshot(b []byte) (Snapshot, error) {
	var r io.Reader = bytes.NewReader(b)
	if len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return Snapshot{}, fmt.Errorf("lazyxds snapshot: %w", err)
		}
		defer zr.Close()
		r = io.LimitReader(zr, 64<<20) // a corrupt or hostile blob must not exhaust memory
	}
	var s Snapshot
	dec := json.NewDecoder(r)
	if err := dec.Decode(&s); err != nil {
		return Snapshot{}, fmt.Errorf("lazyxds snapshot: %w", err)
	}
	if s.Version != SnapshotVersion {
		return Snapshot{}, fmt.Errorf("lazyxds snapshot: unsupported version %d (want %d)", s.Version, SnapshotVersion)
	}
	return s, nil
}
