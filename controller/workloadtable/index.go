package workloadtable

import (
	"sync"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"github.com/leanmesh/leanmesh/filters/workloads"
)

// Index holds which object (pod or WorkloadEntry) owns which addresses and
// publishes the differences to the linear cache that serves the stream.
// Several objects may claim one address for a moment (a pod is deleted while
// its IP is reused): the latest claim wins, and deleting an object removes
// only the addresses it still owns.
type Index struct {
	mu    sync.Mutex
	byObj map[string][]string
	owner map[string]string // ip → object key
	cache *cachev3.LinearCache
}

// NewIndex returns an empty index publishing to a new linear cache.
func NewIndex() *Index {
	return &Index{
		byObj: map[string][]string{},
		owner: map[string]string{},
		cache: cachev3.NewLinearCache(workloads.TypeURL),
	}
}

// Cache is what the gRPC server serves.
func (x *Index) Cache() *cachev3.LinearCache { return x.cache }

// Set makes obj own exactly ips, all with workload w.
func (x *Index) Set(obj string, ips []string, w workloads.Workload) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	keep := map[string]bool{}
	update := map[string]types.Resource{}
	for _, ip := range ips {
		keep[ip] = true
		x.owner[ip] = obj
		update[ip] = w.ToStruct()
	}
	var remove []string
	for _, ip := range x.byObj[obj] {
		if !keep[ip] && x.owner[ip] == obj {
			delete(x.owner, ip)
			remove = append(remove, ip)
		}
	}
	x.byObj[obj] = append([]string(nil), ips...)
	// The linear cache versions resources by content hash, so re-setting an
	// unchanged pod sends nothing.
	return x.cache.UpdateResources(update, remove)
}

// Delete drops obj and the addresses it still owns.
func (x *Index) Delete(obj string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	var remove []string
	for _, ip := range x.byObj[obj] {
		if x.owner[ip] == obj {
			delete(x.owner, ip)
			remove = append(remove, ip)
		}
	}
	delete(x.byObj, obj)
	if len(remove) == 0 {
		return nil
	}
	return x.cache.UpdateResources(nil, remove)
}

// Len is the number of addresses served.
func (x *Index) Len() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.owner)
}
