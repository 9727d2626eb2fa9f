package telemetry

import (
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Registry.
type Options struct {
	// Buckets are the histogram upper bounds (ms for durations, bytes for
	// sizes, as in Envoy). Empty means DefaultBuckets.
	Buckets []float64
	// MaxSeries caps the number of series (one series = one label set of one
	// HTTP request or TCP connection, holding all its families). Beyond it,
	// new label sets fold into an overflow series. 0 means DefaultMaxSeries.
	MaxSeries int
	// MaxSeriesBytes caps the registry's estimated memory for series and
	// their label blocks; beyond it new label sets fold into the overflow
	// series too. 0 means DefaultMaxSeriesBytes.
	MaxSeriesBytes int
	// MaxExpositionBytes caps the scrape: a new label set whose lines would
	// take the exposition past it folds into overflow, and the writer stops
	// at a label-set boundary if it is reached anyway. 0 means
	// DefaultMaxExpositionBytes.
	MaxExpositionBytes int
	// MaxLabelValueLength truncates longer label values (at a UTF-8
	// boundary). 0 means DefaultMaxLabelValueLength.
	MaxLabelValueLength int
	// EvictionInterval removes series not recorded for this long, once a
	// scrape has seen their final values (evict.go). 0 keeps them forever.
	EvictionInterval time.Duration
	// NativeHistograms also records the histograms as Prometheus native
	// histograms of NativeSchema, served in the protobuf exposition.
	NativeHistograms bool
	NativeSchema     int
	// Overrides customise families and labels; nil means Istio's defaults.
	Overrides *Overrides
	// IstioVersion is the tag label of istio_build (served only with a
	// NamePrefix: Istio's own filter reports the unprefixed one).
	IstioVersion string
	// NamePrefix is prepended to every family name in the exposition,
	// istio_build included (Shadow mode: pluginconfig.ShadowMetricPrefix).
	// Without a prefix istio_build is not served (see smallFamilies).
	NamePrefix string
}

// Defaults of the budgets. A label set with Istio's 25 labels and the default
// buckets costs ~2.5 KB of registry memory and 30–60 KB of exposition.
const (
	// DefaultMaxSeries bounds memory when label values explode (e.g.
	// Host-header fallback with random hosts).
	DefaultMaxSeries          = 100000
	DefaultMaxSeriesBytes     = 128 << 20
	DefaultMaxExpositionBytes = 64 << 20
	// DefaultMaxLabelValueLength fits every value Kubernetes and Istio derive
	// (DNS names ≤ 253, SPIFFE principals ≤ ~340) and cuts what only a client
	// controls (Host headers, request-header dimensions).
	DefaultMaxLabelValueLength = 512
	MinLabelValueLength        = 32
)

// OverflowValue is the value of every peer label of the overflow series.
const OverflowValue = "leanmesh_overflow"

const numShards = 64 // a power of two; Envoy worker ids map onto shards modulo this

// Registry holds series in per-worker shards. Recording takes only the
// calling worker's shard mutex (uncontended: Envoy binds a stream to one
// worker thread) and updates atomic counters; no global lock is on the
// recording path once a series exists.
type Registry struct {
	opts    Options
	buckets []float64
	native  nativeLayout
	shards  [numShards]shard

	nseries  atomic.Int64
	overflow atomic.Uint64 // label sets folded into the overflow series
	budget   atomic.Uint64 // ... of which because of a byte budget
	full     atomic.Bool   // a byte budget refused a label set; cleared by eviction
	evicted  atomic.Uint64 // series removed by eviction
	maxHold  atomic.Int64  // longest shard-mutex hold of a sweep, ns
	// most series a sweep examined in one shard-mutex hold
	maxHoldEntries atomic.Int64

	// mu guards label sets and series creation and removal; the exposition
	// holds it only while it copies the label-set lists.
	mu       sync.Mutex
	tables   []*table
	family   [numMetrics]*table
	scratch  []byte
	memBytes int64 // estimated bytes of series and label blocks (budget)
	expBytes int64 // estimated exposition bytes of all label sets (budget)

	peers peerInterner

	clock       atomic.Uint32 // eviction ticks (evict.go)
	scrapedTick atomic.Uint32 // clock at the start of the latest scrape
	stop        chan struct{}

	istioVersion atomic.Pointer[string]
}

type shard struct {
	mu       sync.Mutex
	m        map[Key]*series
	overflow map[overflowKey]*series
	_        [40]byte // keep neighbouring shards' mutexes off one cache line
}

type overflowKey struct {
	reporter Reporter
	tcp      bool
}

// series holds the values of one label set recorded by one worker.
type series struct {
	counters [4]atomic.Uint64 // HTTP: requests, req msgs, resp msgs; TCP: opened, closed, sent, received
	hists    [3]histogram     // HTTP: duration, request bytes, response bytes
	touched  uint32           // clock of the last record; guarded by the shard mutex
	sets     []*labelSet      // the label sets s is a member of; guarded by Registry.mu
	cost     int64            // its share of memBytes
}

type histogram struct {
	counts []atomic.Uint64 // one per bucket, plus +Inf; not cumulative
	sum    atomic.Uint64
	native *nativeCounts // nil unless native histograms are on
}

func (r *Registry) observe(h *histogram, v uint64) {
	fv := float64(v)
	bounds := r.buckets
	i := 0
	for i < len(bounds) && fv > bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(v)
	if h.native != nil {
		h.native.observe(&r.native, v)
	}
}

// table interns the rendered label blocks of one layout.
type table struct {
	lay      layout
	grpcOnly bool
	byText   map[string]*labelSet
	list     []*labelSet
	dead     int      // removed label sets still in list (compacted by the sweep)
	metrics  []Metric // exported families rendered with this table
}

type labelSet struct {
	text string // `{a="x",...}`
	tab  *table
	// members is replaced, never modified in place, so that the exposition
	// can read a copy of the slice header without the lock.
	members []*series
	expCost int64
}

// Counter and histogram slots of a series per family.
var slot = [numMetrics]int{
	RequestsTotal: 0, RequestMessages: 1, ResponseMessages: 2,
	RequestDuration: 0, RequestBytes: 1, ResponseBytes: 2,
	TCPOpened: 0, TCPClosed: 1, TCPSentBytes: 2, TCPReceivedBytes: 3,
}

// NewRegistry builds an empty registry. With an eviction interval it starts
// the sweeper goroutine (Close stops it).
func NewRegistry(opts Options) *Registry {
	r := newRegistry(opts)
	if r.opts.EvictionInterval > 0 {
		r.startSweeper()
	}
	return r
}

func newRegistry(opts Options) *Registry {
	if opts.MaxSeries <= 0 {
		opts.MaxSeries = DefaultMaxSeries
	}
	if opts.MaxSeriesBytes <= 0 {
		opts.MaxSeriesBytes = DefaultMaxSeriesBytes
	}
	if opts.MaxExpositionBytes <= 0 {
		opts.MaxExpositionBytes = DefaultMaxExpositionBytes
	}
	if opts.MaxLabelValueLength <= 0 {
		opts.MaxLabelValueLength = DefaultMaxLabelValueLength
	}
	opts.MaxLabelValueLength = max(opts.MaxLabelValueLength, MinLabelValueLength)
	r := &Registry{opts: opts}
	r.peers.init(opts.MaxLabelValueLength)
	if opts.IstioVersion != "" {
		r.SetIstioVersion(opts.IstioVersion)
	}
	r.buckets = opts.Buckets
	if len(r.buckets) == 0 {
		r.buckets = DefaultBuckets
	}
	r.buckets = append([]float64(nil), r.buckets...)
	sort.Float64s(r.buckets)
	if opts.NativeHistograms {
		r.native = newNativeLayout(opts.NativeSchema)
	}
	for i := range r.shards {
		r.shards[i].m = map[Key]*series{}
		r.shards[i].overflow = map[overflowKey]*series{}
	}
	for m := Metric(0); m < numMetrics; m++ {
		lay := opts.Overrides.layoutFor(m)
		grpcOnly := m == RequestMessages || m == ResponseMessages
		var t *table
		for _, existing := range r.tables {
			if existing.grpcOnly == grpcOnly && existing.lay.equal(lay) {
				t = existing
			}
		}
		if t == nil {
			t = &table{lay: lay, grpcOnly: grpcOnly, byText: map[string]*labelSet{}}
			r.tables = append(r.tables, t)
		}
		if !opts.Overrides.Dropped(m) {
			t.metrics = append(t.metrics, m)
		}
		r.family[m] = t
	}
	return r
}

// SetIstioVersion sets istio_build's tag; the filter learns it from the
// node metadata after the registry exists.
func (r *Registry) SetIstioVersion(v string) { r.istioVersion.Store(&v) }

// Buckets returns the histogram bounds in use.
func (r *Registry) Buckets() []float64 { return r.buckets }

// InternPeer returns the canonical pointer for p, so that Keys built from
// separately decoded copies of one peer resolve to the same series. It is
// meant for the peer-cache miss path, not per request. The registry holds
// peers weakly: a peer that no series, peer cache or caller references any
// more is released (intern.go). Values longer than MaxLabelValueLength are
// truncated.
func (r *Registry) InternPeer(p Peer) *Peer { return r.peers.intern(p) }

// HTTPObservation is what one finished HTTP request adds.
type HTTPObservation struct {
	DurationMs       uint64
	HasDuration      bool
	RequestBytes     uint64
	ResponseBytes    uint64
	HasBytes         bool
	RequestMessages  uint64 // gRPC only
	ResponseMessages uint64
}

// RecordHTTP adds one request to the series of k in worker's shard.
func (r *Registry) RecordHTTP(worker uint32, k *Key, o *HTTPObservation) {
	s := r.resolve(worker, k)
	s.counters[0].Add(1)
	if k.Protocol == ProtocolGRPC {
		s.counters[1].Add(o.RequestMessages)
		s.counters[2].Add(o.ResponseMessages)
	}
	if o.HasDuration {
		r.observe(&s.hists[0], o.DurationMs)
	}
	if o.HasBytes {
		r.observe(&s.hists[1], o.RequestBytes)
		r.observe(&s.hists[2], o.ResponseBytes)
	}
}

// TCPObservation is what one TCP report adds: opened/closed are 0 or 1, bytes
// are deltas since the connection's previous report.
type TCPObservation struct {
	Opened, Closed           uint64
	SentBytes, ReceivedBytes uint64
}

// RecordTCP adds one report of a connection to the series of k.
func (r *Registry) RecordTCP(worker uint32, k *Key, o *TCPObservation) {
	s := r.resolve(worker, k)
	s.counters[0].Add(o.Opened)
	s.counters[1].Add(o.Closed)
	s.counters[2].Add(o.SentBytes)
	s.counters[3].Add(o.ReceivedBytes)
}

func (r *Registry) resolve(worker uint32, k *Key) *series {
	var clamped Key
	if k.tooLong(r.opts.MaxLabelValueLength) {
		// Over-long values (a client's Host header, a request-header
		// dimension) are cut before lookup, so that all values sharing the
		// prefix share one series and the map key holds the cut copy only.
		clamped = *k
		clamped.truncate(r.opts.MaxLabelValueLength)
		k = &clamped
	}
	sh := &r.shards[worker&(numShards-1)]
	now := r.clock.Load()
	sh.mu.Lock()
	s := sh.m[*k]
	if s == nil {
		s = r.create(sh, k)
	}
	s.touched = now
	sh.mu.Unlock()
	return s
}

// create runs with sh.mu held.
func (r *Registry) create(sh *shard, k *Key) *series {
	tcp := k.Protocol == ProtocolTCP
	if r.nseries.Load() >= int64(r.opts.MaxSeries) {
		return r.overflowSeries(sh, k)
	}
	if r.full.Load() {
		r.budget.Add(1)
		return r.overflowSeries(sh, k)
	}
	s := r.newSeries(tcp)
	v := k.Values()
	var extra []string
	if r.opts.Overrides != nil {
		extra = SplitExtra(k.Extra, len(r.opts.Overrides.Expressions))
	}
	s.cost = seriesCost(k, tcp, len(r.buckets), r.native.enabled)
	if !r.link(s, tcp, k.Protocol == ProtocolGRPC, &v, extra, true) {
		r.budget.Add(1)
		return r.overflowSeries(sh, k)
	}
	sh.m[ownedKey(k)] = s
	r.nseries.Add(1)
	return s
}

func (r *Registry) overflowSeries(sh *shard, k *Key) *series {
	tcp := k.Protocol == ProtocolTCP
	r.overflow.Add(1)
	ok := overflowKey{k.Reporter, tcp}
	if s := sh.overflow[ok]; s != nil {
		return s
	}
	s := r.newSeries(tcp)
	var v [NumLabels]string
	for i := range v {
		v[i] = OverflowValue
	}
	v[LReporter] = k.Reporter.String()
	v[LRequestProtocol] = k.Protocol.String()
	if k.Protocol == ProtocolGRPC {
		v[LRequestProtocol] = ProtocolHTTP.String() // one overflow series for HTTP and gRPC
	}
	r.link(s, tcp, false, &v, nil, false)
	sh.overflow[ok] = s
	return s
}

func (r *Registry) newSeries(tcp bool) *series {
	s := &series{}
	if !tcp {
		for i := range s.hists {
			s.hists[i].counts = make([]atomic.Uint64, len(r.buckets)+1)
			if r.native.enabled {
				s.hists[i].native = r.native.newCounts()
			}
		}
	}
	return s
}

// link renders s's label blocks and adds it to the label sets it belongs to.
// With budgeted, it adds nothing and returns false when the new label sets
// would take the registry past its memory or exposition budget.
func (r *Registry) link(s *series, tcp, grpc bool, v *[NumLabels]string, extra []string, budgeted bool) bool {
	metrics := HTTPMetrics
	if tcp {
		metrics = TCPMetrics
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var sets [4]*labelSet // at most one per table a series uses
	n := 0
	mem, exp := s.cost, int64(0)
	for _, m := range metrics {
		t := r.family[m]
		if t.grpcOnly && !grpc {
			continue
		}
		seen := false
		for _, d := range sets[:n] {
			seen = seen || d.tab == t
		}
		if seen {
			continue
		}
		r.scratch = t.lay.render(r.scratch[:0], v, extra, r.opts.MaxLabelValueLength)
		ls := t.byText[string(r.scratch)]
		if ls == nil {
			ls = &labelSet{text: string(r.scratch), tab: t}
			ls.expCost = r.expositionCost(t, ls.text)
			mem += labelSetCost(ls.text)
			exp += ls.expCost
		}
		sets[n] = ls
		n++
	}
	if budgeted && (r.memBytes+mem > int64(r.opts.MaxSeriesBytes) || r.expBytes+exp > int64(r.opts.MaxExpositionBytes)) {
		// Until eviction frees some, new label sets go straight to overflow
		// without rendering their blocks.
		r.full.Store(true)
		return false
	}
	r.memBytes += mem
	r.expBytes += exp
	s.sets = append([]*labelSet(nil), sets[:n]...)
	for _, ls := range s.sets {
		t := ls.tab
		if t.byText[ls.text] == nil {
			t.byText[ls.text] = ls
			t.list = append(t.list, ls)
		}
		ls.members = append(ls.members[:len(ls.members):len(ls.members)], s)
	}
	return true
}

// Series returns the number of series (excluding overflow series).
func (r *Registry) Series() int { return int(r.nseries.Load()) }

// Overflowed returns how many new label sets were folded into overflow.
func (r *Registry) Overflowed() uint64 { return r.overflow.Load() }

// OverBudget returns how many of them were folded because of a byte budget.
func (r *Registry) OverBudget() uint64 { return r.budget.Load() }

// Evicted returns how many series eviction removed.
func (r *Registry) Evicted() uint64 { return r.evicted.Load() }

// Usage returns the estimated registry memory (series and label blocks)
// and exposition bytes, the quantities the byte budgets bound.
func (r *Registry) Usage() (memBytes, expositionBytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.memBytes, r.expBytes
}

// ownedKey copies k's strings: a filter may build Keys from header values
// that live in Envoy's memory only for the duration of a callback.
func ownedKey(k *Key) Key {
	o := *k
	o.Service.Host = strings.Clone(k.Service.Host)
	o.Service.Name = strings.Clone(k.Service.Name)
	o.Service.Namespace = strings.Clone(k.Service.Namespace)
	o.PeerPrincipal = strings.Clone(k.PeerPrincipal)
	o.LocalPrincipal = strings.Clone(k.LocalPrincipal)
	o.GRPCStatus = strings.Clone(k.GRPCStatus)
	o.ResponseFlags = strings.Clone(k.ResponseFlags)
	o.Extra = strings.Clone(k.Extra)
	return o
}
