package peer

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"unsafe"
)

func sampleValue(t testing.TB) string {
	t.Helper()
	return structValue(t, `{"NAME":"a-1","NAMESPACE":"ns","WORKLOAD_NAME":"a","LABELS":{"app":"a"}}`)
}

func TestCacheHitMiss(t *testing.T) {
	c := NewCache(0)
	v := sampleValue(t)
	w1, hit, err := c.Lookup("sidecar~10.0.0.1~a-1.ns~ns.svc.cluster.local", v)
	if err != nil || hit || w1.Name != "a" {
		t.Fatalf("first lookup: %+v, %v, %v", w1, hit, err)
	}
	w2, hit, err := c.Lookup("sidecar~10.0.0.1~a-1.ns~ns.svc.cluster.local", "not even base64!")
	if err != nil || !hit || w2 != w1 {
		t.Fatalf("second lookup: %p %v %v, want the cached %p without decoding", w2, hit, err, w1)
	}
	if _, _, err := c.Lookup("sidecar~10.0.0.1~a-1.ns~ns.svc.cluster.local", ""); !errors.Is(err, ErrEmpty) {
		t.Errorf("empty value on a cached id: %v, want ErrEmpty", err)
	}
	if c.Len() != 1 {
		t.Errorf("Len = %d", c.Len())
	}
}

func TestCacheHitAllocs(t *testing.T) {
	c := NewCache(0)
	v := sampleValue(t)
	id := strings.Repeat("x", 3) + "~10.0.0.1~pod.ns" // built at run time, like a header
	if _, _, err := c.Lookup(id, v); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if _, hit, _ := c.Lookup(id, v); !hit {
			t.Fatal("miss")
		}
	})
	if allocs != 0 {
		t.Errorf("hit allocates %v times, want 0", allocs)
	}
}

func TestCacheNoCaching(t *testing.T) {
	v := sampleValue(t)
	c := NewCache(4)
	if _, hit, err := c.Lookup("", v); err != nil || hit || c.Len() != 0 {
		t.Errorf("empty id: hit=%v err=%v len=%d", hit, err, c.Len())
	}
	long := strings.Repeat("i", MaxCachedIDLen+1)
	if _, hit, err := c.Lookup(long, v); err != nil || hit || c.Len() != 0 {
		t.Errorf("long id: hit=%v err=%v len=%d", hit, err, c.Len())
	}
	var nilCache *Cache
	if w, hit, err := nilCache.Lookup("id", v); err != nil || hit || w == nil || nilCache.Len() != 0 {
		t.Errorf("nil cache: %v %v %v", w, hit, err)
	}
}

// Failures are not cached: the next good value for the id is used, and bad
// values never take a slot.
func TestCacheErrorsNotCached(t *testing.T) {
	c := NewCache(4)
	for i := range 100 {
		if _, _, err := c.Lookup(fmt.Sprint("id", i), "%%%"); !errors.Is(err, ErrBase64) {
			t.Fatalf("got %v", err)
		}
		if _, _, err := c.Lookup(fmt.Sprint("id", i), structValue(t, `{"NAME":7}`)); !errors.Is(err, ErrShape) {
			t.Fatalf("got %v", err)
		}
	}
	if c.Len() != 0 {
		t.Fatalf("Len = %d after only bad values", c.Len())
	}
	w, hit, err := c.Lookup("id1", sampleValue(t))
	if err != nil || hit || w.Name != "a" {
		t.Errorf("good value after bad: %+v %v %v", w, hit, err)
	}
}

func TestCacheBound(t *testing.T) {
	v := sampleValue(t)
	for _, capacity := range []int{1, 3, 8, DefaultCacheSize} {
		c := NewCache(capacity)
		for i := range 20 * capacity {
			id := fmt.Sprint("sidecar~10.0.", i, "~pod.ns")
			if _, hit, err := c.Lookup(id, v); err != nil || hit {
				t.Fatalf("capacity %d, id %d: hit=%v err=%v", capacity, i, hit, err)
			}
			n := c.Len()
			if n > capacity || n == 0 {
				t.Fatalf("capacity %d: Len = %d after %d inserts", capacity, n, i+1)
			}
			// Eviction drops a quarter, not everything.
			if i+1 >= capacity && n < capacity-capacity/4 {
				t.Fatalf("capacity %d: Len = %d after %d inserts", capacity, n, i+1)
			}
			// The newest entry always survives its own insertion.
			if _, hit, _ := c.Lookup(id, v); !hit {
				t.Fatalf("capacity %d: just-inserted id %d missing", capacity, i)
			}
		}
	}
}

// The id may point into memory the caller reuses (Envoy's header buffer):
// the cache must keep its own copy.
func TestCacheClonesID(t *testing.T) {
	c := NewCache(4)
	buf := []byte("peer-one")
	id := unsafe.String(&buf[0], len(buf))
	if _, _, err := c.Lookup(id, sampleValue(t)); err != nil {
		t.Fatal(err)
	}
	copy(buf, "PEER-TWO")
	if _, hit, _ := c.Lookup("peer-one", sampleValue(t)); !hit {
		t.Error("entry lost when the caller's id memory changed")
	}
	if _, hit, _ := c.Lookup("PEER-TWO", sampleValue(t)); hit {
		t.Error("cache key aliases the caller's memory")
	}
}

func TestCacheConcurrent(t *testing.T) {
	c := NewCache(16)
	values := []string{
		sampleValue(t),
		structValue(t, `{"WORKLOAD_NAME":"b","NAMESPACE":"ns2"}`),
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				k := (i*7 + g) % 64
				w, _, err := c.Lookup(fmt.Sprint("id-", k), values[k%2])
				if err != nil {
					t.Error(err)
					return
				}
				if want := []string{"a", "b"}[k%2]; w.Name != want {
					t.Errorf("id-%d: Name = %q, want %q", k, w.Name, want)
					return
				}
				if c.Len() > 16 {
					t.Errorf("Len = %d", c.Len())
					return
				}
			}
		})
	}
	wg.Wait()
}
