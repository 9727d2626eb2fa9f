package peer

import (
	"strings"
	"sync"
)

// DefaultCacheSize is Istio's hard-coded per-thread peer cache size.
const DefaultCacheSize = 500

// MaxCachedIDLen bounds the id bytes a cache entry may hold: node ids are
// "sidecar~<ip>~<pod>.<ns>~<ns>.svc.<domain>", well under this. A longer id
// is decoded but not cached, so capacity × MaxCachedIDLen bounds key memory.
const MaxCachedIDLen = 1024

// Cache maps x-envoy-peer-metadata-id to the decoded peer, as Istio does:
// the value is decoded once per id and later values for a known id are not
// looked at (an id names one proxy, whose metadata does not change).
//
// Eviction: when full, an arbitrary quarter of the entries is dropped (Go's
// randomized map order; Istio drops a quarter in hash order). That is one
// O(capacity) sweep per capacity/4 insertions: O(1) amortized, no per-entry
// bookkeeping, and a hit touches nothing but the map.
//
// Failures are not cached. Istio caches an empty peer for a bad base64 value
// (and nothing for a bad Struct); leanmesh returns the error every time, so a
// peer that later sends a good value under the same id is not stuck as
// "unknown", and a stream of bad headers costs CPU (bounded by MaxHeaderLen)
// but never memory.
//
// A Cache is safe for concurrent use. The filter keeps one per Envoy worker,
// so its mutex is uncontended.
type Cache struct {
	mu       sync.Mutex
	m        map[string]*Workload
	capacity int
}

// NewCache returns a cache of at most capacity entries; capacity <= 0 means
// DefaultCacheSize.
func NewCache(capacity int) *Cache {
	if capacity <= 0 {
		capacity = DefaultCacheSize
	}
	return &Cache{m: make(map[string]*Workload, capacity), capacity: capacity}
}

// Lookup returns the peer for an (id, value) header pair. hit reports that
// it came from the cache without decoding. An empty id decodes without
// caching; an empty value is ErrEmpty (no header, no peer, as in Istio) even
// for a cached id. id may point into memory the caller does not own: it is
// cloned before being stored. A nil *Cache decodes every time.
func (c *Cache) Lookup(id, value string) (w *Workload, hit bool, err error) {
	if value == "" {
		return nil, false, ErrEmpty
	}
	if c == nil || id == "" {
		w, err = Decode(value)
		return w, false, err
	}
	c.mu.Lock()
	w, hit = c.m[id]
	c.mu.Unlock()
	if hit {
		return w, true, nil
	}
	// Decode outside the lock; a concurrent miss on the same id decodes twice
	// and keeps the first result, which is harmless.
	w, err = Decode(value)
	if err != nil || len(id) > MaxCachedIDLen {
		return w, false, err
	}
	c.mu.Lock()
	if old, ok := c.m[id]; ok {
		w = old
	} else {
		if len(c.m) >= c.capacity {
			c.evictLocked()
		}
		c.m[strings.Clone(id)] = w
	}
	c.mu.Unlock()
	return w, false, nil
}

func (c *Cache) evictLocked() {
	n := max(c.capacity/4, 1)
	for k := range c.m {
		if n == 0 {
			break
		}
		delete(c.m, k)
		n--
	}
}

// Len returns the number of cached peers.
func (c *Cache) Len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
