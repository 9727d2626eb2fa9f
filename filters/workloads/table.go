// Package workloads is leanmesh's address → workload table: how the TCP
// filter learns who is on the other end of a connection without ALPN or
// metadata exchange. The table is fed by a delta xDS stream from the
// controller (client.go, PROTOCOL.md) and read on every new connection.
//
// Reads are lock-free and allocation-free: the table is a copy-on-write
// array of shard maps behind one atomic pointer, so an update never blocks a
// lookup and a lookup always sees one whole update or none of it.
package workloads

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// Workload is the identity of the workload behind one address. Tables intern
// equal workloads, so all pods of a Deployment share one *Workload: callers
// may key caches by the pointer.
type Workload struct {
	Name              string
	Namespace         string
	CanonicalService  string
	CanonicalRevision string
	App               string
	Version           string
	Cluster           string
	ServiceAccount    string
}

// Update adds or replaces the workload of one address.
type Update struct {
	Name     string // the resource name: the address, e.g. "10.244.0.11" or "fd00::b"
	Version  string // opaque, echoed back on reconnect
	Workload Workload
}

// Delta is one batch of changes, applied atomically or not at all.
type Delta struct {
	Updates  []Update
	Removals []string
}

// DefaultMaxEntries bounds a table: 256k addresses (about 30 MB, see the
// BenchmarkTableMemory numbers) is several times the pod count of the
// largest single clusters. An update that would exceed it is rejected whole.
const DefaultMaxEntries = 1 << 18

// MaxFieldLen bounds every string of a workload: Kubernetes names are at most
// 253 bytes and label values 63, so anything longer is corrupt.
const MaxFieldLen = 253

// MaxVersionLen bounds a resource version string.
const MaxVersionLen = 128

const numShards = 256 // a power of two

// ErrRejected wraps every reason a delta is refused.
var ErrRejected = errors.New("workload update rejected")

// Table maps addresses to workloads. The zero value is not usable; use
// NewTable.
type Table struct {
	root atomic.Pointer[root]
	max  int

	mu     sync.Mutex // serialises writers
	intern map[Workload]*interned

	applied  atomic.Uint64
	rejected atomic.Uint64
}

type root struct {
	shards [numShards]*shard
	n      int
}

type shard struct {
	m map[netip.Addr]entry
}

type entry struct {
	w       *Workload
	version string
}

type interned struct {
	w    *Workload
	refs int
}

// NewTable returns an empty table holding at most maxEntries addresses
// (0 means DefaultMaxEntries).
func NewTable(maxEntries int) *Table {
	if maxEntries <= 0 {
		maxEntries = DefaultMaxEntries
	}
	t := &Table{max: maxEntries, intern: map[Workload]*interned{}}
	t.root.Store(&root{})
	return t
}

// Lookup returns the workload at addr, or nil. It does not allocate and is
// safe concurrently with Apply. IPv4-mapped IPv6 addresses match their IPv4
// form; zones are ignored.
func (t *Table) Lookup(addr netip.Addr) *Workload {
	addr = normalize(addr)
	r := t.root.Load()
	sh := r.shards[shardOf(addr)]
	if sh == nil {
		return nil
	}
	return sh.m[addr].w
}

// Len is the number of addresses.
func (t *Table) Len() int { return t.root.Load().n }

// Applied and Rejected count deltas since the table was created.
func (t *Table) Applied() uint64  { return t.applied.Load() }
func (t *Table) Rejected() uint64 { return t.rejected.Load() }

// Versions returns resource name → version of every entry: what a client
// reports as initial_resource_versions when it reconnects, so the server
// sends only what changed meanwhile (and removals of what went away).
func (t *Table) Versions() map[string]string {
	r := t.root.Load()
	out := make(map[string]string, r.n)
	for _, sh := range r.shards {
		if sh == nil {
			continue
		}
		for a, e := range sh.m {
			out[a.String()] = e.version
		}
	}
	return out
}

type change struct {
	addr    netip.Addr
	remove  bool
	version string
	w       Workload
}

// Apply validates d as a whole and then applies it. On any invalid entry or
// if the result would exceed the bound, nothing changes, the rejection is
// counted and an error wrapping ErrRejected is returned.
func (t *Table) Apply(d Delta) error {
	changes, err := validate(d)
	if err != nil {
		t.rejected.Add(1)
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.root.Load()
	n := old.n
	// Later changes to one address win, as in a stream of deltas.
	final := make(map[netip.Addr]int, len(changes))
	for i, c := range changes {
		final[c.addr] = i
	}
	for a, i := range final {
		_, present := lookupIn(old, a)
		switch {
		case changes[i].remove && present:
			n--
		case !changes[i].remove && !present:
			n++
		}
	}
	if n > t.max {
		t.rejected.Add(1)
		return fmt.Errorf("%w: %d entries would exceed the table bound %d", ErrRejected, n, t.max)
	}
	next := &root{shards: old.shards, n: n}
	copied := [numShards]bool{}
	for a, i := range final {
		c := &changes[i]
		s := shardOf(a)
		if !copied[s] {
			copied[s] = true
			fresh := &shard{m: map[netip.Addr]entry{}}
			if prev := old.shards[s]; prev != nil {
				fresh.m = make(map[netip.Addr]entry, len(prev.m)+1)
				for k, v := range prev.m {
					fresh.m[k] = v
				}
			}
			next.shards[s] = fresh
		}
		m := next.shards[s].m
		if prevEntry, ok := m[a]; ok {
			t.release(prevEntry.w)
			delete(m, a)
		}
		if !c.remove {
			m[a] = entry{w: t.acquire(c.w), version: c.version}
		}
	}
	for s := range copied {
		if copied[s] && len(next.shards[s].m) == 0 {
			next.shards[s] = nil
		}
	}
	t.root.Store(next)
	t.applied.Add(1)
	return nil
}

func lookupIn(r *root, a netip.Addr) (entry, bool) {
	sh := r.shards[shardOf(a)]
	if sh == nil {
		return entry{}, false
	}
	e, ok := sh.m[a]
	return e, ok
}

// acquire and release intern workloads (t.mu held) so that equal identities
// share one pointer and memory is per distinct workload, not per address.
func (t *Table) acquire(w Workload) *Workload {
	in := t.intern[w]
	if in == nil {
		p := w
		in = &interned{w: &p}
		t.intern[w] = in
	}
	in.refs++
	return in.w
}

func (t *Table) release(w *Workload) {
	in := t.intern[*w]
	if in == nil || in.w != w {
		return
	}
	if in.refs--; in.refs <= 0 {
		delete(t.intern, *w)
	}
}

func validate(d Delta) ([]change, error) {
	out := make([]change, 0, len(d.Updates)+len(d.Removals))
	for _, name := range d.Removals {
		a, err := ParseName(name)
		if err != nil {
			return nil, fmt.Errorf("%w: removal: %v", ErrRejected, err)
		}
		out = append(out, change{addr: a, remove: true})
	}
	for _, u := range d.Updates {
		a, err := ParseName(u.Name)
		if err != nil {
			return nil, fmt.Errorf("%w: update: %v", ErrRejected, err)
		}
		if err := checkWorkload(&u.Workload); err != nil {
			return nil, fmt.Errorf("%w: update %s: %v", ErrRejected, u.Name, err)
		}
		if len(u.Version) > MaxVersionLen {
			return nil, fmt.Errorf("%w: update %s: version longer than %d bytes", ErrRejected, u.Name, MaxVersionLen)
		}
		out = append(out, change{addr: a, version: u.Version, w: u.Workload})
	}
	return out, nil
}

// ParseName parses a resource name: a bare IPv4 or IPv6 address.
func ParseName(name string) (netip.Addr, error) {
	a, err := netip.ParseAddr(name)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("resource name %q is not an IP address", truncate(name))
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("resource name %q has a zone", truncate(name))
	}
	return normalize(a), nil
}

func checkWorkload(w *Workload) error {
	for _, f := range [...]struct{ name, v string }{
		{"name", w.Name}, {"namespace", w.Namespace}, {"canonical_service", w.CanonicalService},
		{"canonical_revision", w.CanonicalRevision}, {"app", w.App}, {"version", w.Version},
		{"cluster", w.Cluster}, {"service_account", w.ServiceAccount},
	} {
		if len(f.v) > MaxFieldLen {
			return fmt.Errorf("field %s longer than %d bytes", f.name, MaxFieldLen)
		}
		if !utf8.ValidString(f.v) {
			return fmt.Errorf("field %s is not UTF-8", f.name)
		}
	}
	return nil
}

func normalize(a netip.Addr) netip.Addr {
	return a.Unmap().WithZone("")
}

// shardOf mixes the low bytes, where pod addresses differ.
func shardOf(a netip.Addr) int {
	b := a.As16()
	h := uint32(b[15]) | uint32(b[14])<<8 | uint32(b[13])<<16 | uint32(b[12])<<24
	h ^= uint32(b[11]) | uint32(b[7])<<8 | uint32(b[3])<<16
	h *= 0x9E3779B1
	return int(h >> 24)
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
