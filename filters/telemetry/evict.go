package telemetry

import (
	"slices"
	"time"
)

// Idle-series eviction (Options.EvictionInterval), leanmesh's counterpart of
// Envoy's stats_eviction_interval (Istio: sidecar.istio.io/statsEvictionInterval).
//
// Time is counted in ticks of a quarter interval: recording stamps the series
// with the current tick under the shard mutex it already holds (a load and a
// store, no clock read). Every tick the sweeper removes a series when both
//   - it has not been recorded for a whole interval (4 ticks), and
//   - a scrape started at least one full tick after its last record, so a
//     scraper has seen its final values (a record cannot still be adding
//     to it: recording takes well under a tick).
// A removed series disappears from the next scrape; if its label set is
// recorded again it starts from zero, which Prometheus' rate() and
// increase() treat as a counter reset (a series that vanished and came back).
// Without any scrape nothing is evicted: the count and byte budgets still
// bound the registry.
//
// Lock holds are bounded: a shard's mutex (the only lock the request path
// takes) is released every sweepBatch series, and the registry mutex (taken
// only to create a series and to start a scrape) every sweepBatch removals
// and once per table to compact its list.

const (
	ticksPerInterval = 4
	sweepBatch       = 256
)

func (r *Registry) startSweeper() {
	r.stop = make(chan struct{})
	period := r.opts.EvictionInterval / ticksPerInterval
	go func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-r.stop:
				return
			case <-t.C:
				r.tickAndSweep()
			}
		}
	}()
}

// Close stops the sweeper; the registry stays usable.
func (r *Registry) Close() {
	if r.stop != nil {
		close(r.stop)
		r.stop = nil
	}
}

// markScraped records that a scrape starts now.
func (r *Registry) markScraped() { r.scrapedTick.Store(r.clock.Load()) }

// tickAndSweep advances the clock by one tick and evicts what is due.
func (r *Registry) tickAndSweep() int {
	if r.opts.EvictionInterval <= 0 {
		return 0
	}
	now := r.clock.Add(1)
	scraped := r.scrapedTick.Load()
	due := func(s *series) bool {
		return now-s.touched >= ticksPerInterval && s.touched+1 < scraped
	}
	var victims []*series
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		held := time.Now()
		n := 0
		// Deleting while ranging is allowed, and so is releasing the mutex
		// between iterations: the range sees each remaining entry at most once.
		for k, s := range sh.m {
			if due(s) {
				delete(sh.m, k)
				victims = append(victims, s)
			}
			if n++; n%sweepBatch == 0 {
				r.noteHold(held, sweepBatch)
				sh.mu.Unlock()
				sh.mu.Lock()
				held = time.Now()
			}
		}
		r.noteHold(held, n%sweepBatch)
		sh.mu.Unlock()
	}
	evicted := len(victims)
	if evicted == 0 {
		return 0
	}
	r.full.Store(false)
	r.nseries.Add(-int64(len(victims)))
	r.evicted.Add(uint64(len(victims)))
	for len(victims) > 0 {
		batch := victims[:min(sweepBatch, len(victims))]
		victims = victims[len(batch):]
		r.mu.Lock()
		for _, s := range batch {
			r.unlink(s)
		}
		r.mu.Unlock()
	}
	for _, t := range r.tables {
		r.mu.Lock()
		if t.dead > 0 {
			t.list = slices.DeleteFunc(t.list, func(ls *labelSet) bool { return len(ls.members) == 0 })
			t.dead = 0
		}
		r.mu.Unlock()
	}
	return evicted
}

// noteHold records the longest a sweep held a shard mutex (the request
// path's lock), exposed as leanmesh_eviction_max_shard_lock_hold_seconds.
func (r *Registry) noteHold(since time.Time, entries int) {
	if int64(entries) > r.maxHoldEntries.Load() {
		r.maxHoldEntries.Store(int64(entries)) // only the sweeper writes it
	}
	d := int64(time.Since(since))
	for {
		cur := r.maxHold.Load()
		if d <= cur || r.maxHold.CompareAndSwap(cur, d) {
			return
		}
	}
}

// unlink removes s from its label sets, and a label set left without
// members from its table; it runs with r.mu held.
func (r *Registry) unlink(s *series) {
	r.memBytes -= s.cost
	for _, ls := range s.sets {
		members := make([]*series, 0, len(ls.members))
		for _, m := range ls.members {
			if m != s {
				members = append(members, m)
			}
		}
		if len(members) > 0 {
			ls.members = members
			continue
		}
		ls.members = nil
		t := ls.tab
		delete(t.byText, ls.text)
		t.dead++
		r.memBytes -= labelSetCost(ls.text)
		r.expBytes -= ls.expCost
	}
	s.sets = nil
}
