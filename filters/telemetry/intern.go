package telemetry

import (
	"runtime"
	"sync"
	"weak"
)

// peerInterner canonicalises peers without keeping them alive: the map holds
// weak pointers, and a cleanup removes the entry once the last strong
// reference (a series' Key, a worker's peer-dimension cache, a caller) is
// gone. So interned peers leave with the series and caches that used them,
// and a stream of distinct peer headers costs memory only while something
// still refers to them.
type peerInterner struct {
	mu     sync.Mutex
	m      map[Peer]weak.Pointer[Peer]
	maxLen int
}

func (pi *peerInterner) init(maxLen int) {
	pi.m = map[Peer]weak.Pointer[Peer]{}
	pi.maxLen = maxLen
}

func (pi *peerInterner) intern(p Peer) *Peer {
	n := pi.maxLen
	if len(p.Workload) > n || len(p.Namespace) > n || len(p.CanonicalService) > n || len(p.CanonicalRevision) > n ||
		len(p.App) > n || len(p.Version) > n || len(p.Cluster) > n {
		selfTruncated.Add(1)
		p = Peer{
			Workload: cut(p.Workload, n), Namespace: cut(p.Namespace, n), CanonicalService: cut(p.CanonicalService, n),
			CanonicalRevision: cut(p.CanonicalRevision, n), App: cut(p.App, n), Version: cut(p.Version, n), Cluster: cut(p.Cluster, n),
		}
	}
	pi.mu.Lock()
	defer pi.mu.Unlock()
	if w, ok := pi.m[p]; ok {
		if q := w.Value(); q != nil {
			return q
		}
	}
	q := new(Peer)
	*q = p
	pi.m[p] = weak.Make(q)
	runtime.AddCleanup(q, pi.release, p)
	return q
}

// release runs after a peer became unreachable; a newer pointer for the same
// value may have replaced the entry meanwhile, so only a dead entry goes.
func (pi *peerInterner) release(p Peer) {
	pi.mu.Lock()
	if w, ok := pi.m[p]; ok && w.Value() == nil {
		delete(pi.m, p)
	}
	pi.mu.Unlock()
}

// Peers returns the number of interned peers still in the map (released
// entries go once the garbage collector has run their cleanups).
func (r *Registry) Peers() int {
	r.peers.mu.Lock()
	defer r.peers.mu.Unlock()
	return len(r.peers.m)
}
