package tcpstats

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/leanmesh/leanmesh/filters/panicsafe"
	"github.com/leanmesh/leanmesh/filters/telemetry"
)

// Scheduler reports the byte deltas of live connections periodically. One
// per process (Default): Envoy may hold 100k connections, and a timer or
// goroutine per connection would cost more than the connection's telemetry.
// Connections live in per-shard intrusive lists, so joining and leaving is a
// pointer swap under an uncontended shard mutex, without allocation.
type Scheduler struct {
	shards [numConnShards]connShard
	live   atomic.Int64
	max    int64
	stale  int64 // ns without any callback after which a connection leaves the set

	// now is a coarse clock (unix ns of the last Tick) read by the data
	// path instead of time.Now.
	now atomic.Int64

	tickMu  sync.Mutex // one Tick at a time
	scratch []*conn

	loopOnce sync.Once
	interval atomic.Int64 // ns; the smallest reporting period registered, at most 1s
}

const numConnShards = 64 // a power of two

type connShard struct {
	mu   sync.Mutex
	head *conn
	_    [48]byte // keep neighbouring shards' mutexes off one cache line
}

// DefaultMaxConnections bounds the set of connections the scheduler tracks
// (about 300 bytes each, so ~80 MB at the bound). Beyond it connections are
// still counted, but their bytes are reported only at close.
const DefaultMaxConnections = 1 << 18

// DefaultStaleAfter: a connection without any callback for this long leaves
// the periodic set (see the package comment on what Envoy guarantees). It
// rejoins on its next byte, and its close is still reported.
const DefaultStaleAfter = 24 * time.Hour

// NewScheduler returns a scheduler without a goroutine: tests call Tick.
func NewScheduler(maxConnections int, staleAfter time.Duration) *Scheduler {
	if maxConnections <= 0 {
		maxConnections = DefaultMaxConnections
	}
	if staleAfter <= 0 {
		staleAfter = DefaultStaleAfter
	}
	s := &Scheduler{max: int64(maxConnections), stale: int64(staleAfter)}
	s.now.Store(time.Now().UnixNano())
	s.interval.Store(int64(time.Second))
	return s
}

var defaultScheduler = NewScheduler(0, 0)

// Default is the process-wide scheduler; its goroutine starts with the first
// config that uses it.
func Default() *Scheduler { return defaultScheduler }

// Live is the number of tracked connections.
func (s *Scheduler) Live() int { return int(s.live.Load()) }

// notePeriod makes the ticker at least as fine as period, and starts the
// loop on first use.
func (s *Scheduler) notePeriod(period time.Duration) {
	for {
		cur := s.interval.Load()
		if int64(period) >= cur || s.interval.CompareAndSwap(cur, int64(period)) {
			break
		}
	}
}

func (s *Scheduler) startLoop() {
	s.loopOnce.Do(func() {
		go func() {
			iv := time.Duration(s.interval.Load())
			t := time.NewTicker(iv)
			for now := range t.C {
				s.safeTick(now)
				if next := time.Duration(s.interval.Load()); next != iv {
					iv = next
					t.Reset(iv)
				}
			}
		}()
	})
}

func (s *Scheduler) safeTick(now time.Time) {
	defer panicsafe.Recover[struct{}]("tcp.scheduler", nil, struct{}{}, nil)
	s.Tick(now)
}

// Tick advances the clock to now and reports every connection whose
// reporting period has elapsed; it also drops stale connections from the
// set. Production calls it from one goroutine; tests call it directly.
func (s *Scheduler) Tick(now time.Time) {
	s.tickMu.Lock()
	defer s.tickMu.Unlock()
	ns := now.UnixNano()
	s.now.Store(ns)
	for i := range s.shards {
		sh := &s.shards[i]
		// Snapshot the shard so that reporting (which takes registry locks)
		// never holds the shard lock against new connections.
		sh.mu.Lock()
		s.scratch = s.scratch[:0]
		for c := sh.head; c != nil; c = c.next {
			s.scratch = append(s.scratch, c)
		}
		sh.mu.Unlock()
		for _, c := range s.scratch {
			if ns-c.lastReport.Load() >= c.cfg.period {
				c.report(false, ns)
			}
			if ns-c.lastActive.Load() >= s.stale {
				telemetry.Self.Counter("leanmesh_tcp_connections_stale_total", "", "").Add(1)
				s.remove(c)
				c.detached.Store(true) // after remove: a racing touch then re-adds it
			}
		}
	}
	clear(s.scratch) // drop references to closed connections
}

// add tracks c unless the set is full.
func (s *Scheduler) add(c *conn) bool {
	if s.live.Add(1) > s.max {
		s.live.Add(-1)
		return false
	}
	sh := &s.shards[c.shard&(numConnShards-1)]
	sh.mu.Lock()
	if c.inSet {
		sh.mu.Unlock()
		s.live.Add(-1)
		return true
	}
	c.inSet = true
	c.prev = nil
	c.next = sh.head
	if sh.head != nil {
		sh.head.prev = c
	}
	sh.head = c
	sh.mu.Unlock()
	return true
}

func (s *Scheduler) remove(c *conn) {
	sh := &s.shards[c.shard&(numConnShards-1)]
	sh.mu.Lock()
	if !c.inSet {
		sh.mu.Unlock()
		return
	}
	c.inSet = false
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		sh.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next = nil, nil
	sh.mu.Unlock()
	s.live.Add(-1)
}
