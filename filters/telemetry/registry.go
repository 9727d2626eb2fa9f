package telemetry

import (
	"sort"
	"strings"
	"sync"
	"sync/atomic"
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
	// Overrides customise families and labels; nil means Istio's defaults.
	Overrides *Overrides
	// IstioVersion is the tag label of istio_build.
	IstioVersion string
}

// DefaultMaxSeries bounds memory when label values explode (e.g. Host-header
// fallback with random hosts).
const DefaultMaxSeries = 100000

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
	shards  [numShards]shard

	nseries  atomic.Int64
	overflow atomic.Uint64 // label sets folded into the overflow series

	// mu guards interning (peers, label sets) and series creation; the
	// exposition holds it while it walks label sets.
	mu      sync.Mutex
	peers   map[Peer]*Peer
	tables  []*table
	family  [numMetrics]*table
	scratch []byte

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
}

type histogram struct {
	counts []atomic.Uint64 // one per bucket, plus +Inf; not cumulative
	sum    atomic.Uint64
}

func (h *histogram) observe(bounds []float64, v uint64) {
	fv := float64(v)
	i := 0
	for i < len(bounds) && fv > bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(v)
}

// table interns the rendered label blocks of one layout.
type table struct {
	lay      layout
	grpcOnly bool
	byText   map[string]*labelSet
	list     []*labelSet
}

type labelSet struct {
	text    string // `{a="x",...}`
	members []*series
}

// Counter and histogram slots of a series per family.
var slot = [numMetrics]int{
	RequestsTotal: 0, RequestMessages: 1, ResponseMessages: 2,
	RequestDuration: 0, RequestBytes: 1, ResponseBytes: 2,
	TCPOpened: 0, TCPClosed: 1, TCPSentBytes: 2, TCPReceivedBytes: 3,
}

// NewRegistry builds an empty registry.
func NewRegistry(opts Options) *Registry {
	if opts.MaxSeries <= 0 {
		opts.MaxSeries = DefaultMaxSeries
	}
	r := &Registry{opts: opts, peers: map[Peer]*Peer{}}
	if opts.IstioVersion != "" {
		r.SetIstioVersion(opts.IstioVersion)
	}
	r.buckets = opts.Buckets
	if len(r.buckets) == 0 {
		r.buckets = DefaultBuckets
	}
	r.buckets = append([]float64(nil), r.buckets...)
	sort.Float64s(r.buckets)
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
// meant for the peer-cache miss path, not per request.
func (r *Registry) InternPeer(p Peer) *Peer {
	r.mu.Lock()
	defer r.mu.Unlock()
	if q, ok := r.peers[p]; ok {
		return q
	}
	q := &p
	r.peers[p] = q
	return q
}

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
		s.hists[0].observe(r.buckets, o.DurationMs)
	}
	if o.HasBytes {
		s.hists[1].observe(r.buckets, o.RequestBytes)
		s.hists[2].observe(r.buckets, o.ResponseBytes)
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
	sh := &r.shards[worker&(numShards-1)]
	sh.mu.Lock()
	s := sh.m[*k]
	if s == nil {
		s = r.create(sh, k)
	}
	sh.mu.Unlock()
	return s
}

// create runs with sh.mu held.
func (r *Registry) create(sh *shard, k *Key) *series {
	tcp := k.Protocol == ProtocolTCP
	if r.nseries.Load() >= int64(r.opts.MaxSeries) {
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
		r.link(s, tcp, false, &v, nil)
		sh.overflow[ok] = s
		return s
	}
	s := r.newSeries(tcp)
	v := k.Values()
	var extra []string
	if r.opts.Overrides != nil {
		extra = SplitExtra(k.Extra, len(r.opts.Overrides.Expressions))
	}
	r.link(s, tcp, k.Protocol == ProtocolGRPC, &v, extra)
	sh.m[ownedKey(k)] = s
	r.nseries.Add(1)
	return s
}

func (r *Registry) newSeries(tcp bool) *series {
	s := &series{}
	if !tcp {
		for i := range s.hists {
			s.hists[i].counts = make([]atomic.Uint64, len(r.buckets)+1)
		}
	}
	return s
}

// link renders s's label blocks and adds it to the label sets it belongs to.
func (r *Registry) link(s *series, tcp, grpc bool, v *[NumLabels]string, extra []string) {
	metrics := HTTPMetrics
	if tcp {
		metrics = TCPMetrics
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var done []*table
	for _, m := range metrics {
		t := r.family[m]
		if t.grpcOnly && !grpc {
			continue
		}
		seen := false
		for _, d := range done {
			seen = seen || d == t
		}
		if seen {
			continue
		}
		done = append(done, t)
		r.scratch = t.lay.render(r.scratch[:0], v, extra)
		ls := t.byText[string(r.scratch)]
		if ls == nil {
			ls = &labelSet{text: string(r.scratch)}
			t.byText[ls.text] = ls
			t.list = append(t.list, ls)
		}
		ls.members = append(ls.members, s)
	}
}

// Series returns the number of series (excluding overflow series).
func (r *Registry) Series() int { return int(r.nseries.Load()) }

// Overflowed returns how many new label sets were folded into overflow.
func (r *Registry) Overflowed() uint64 { return r.overflow.Load() }

// ownedKey copies k's strings: a filter may build Keys from header values
// that live in Envoy's memory only for the duration of a callback.
func ownedKey(k *Key) Key {
	o := *k
	o.Service.Host = strings.Clone(k.Service.Host)
	o.Service.Name = strings.Clone(k.Service.Name)
	o.PeerPrincipal = strings.Clone(k.PeerPrincipal)
	o.LocalPrincipal = strings.Clone(k.LocalPrincipal)
	o.GRPCStatus = strings.Clone(k.GRPCStatus)
	o.ResponseFlags = strings.Clone(k.ResponseFlags)
	o.Extra = strings.Clone(k.Extra)
	return o
}
