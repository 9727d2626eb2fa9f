package tcpstats

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"

	"github.com/leanmesh/leanmesh/filters/panicsafe"
	"github.com/leanmesh/leanmesh/filters/pluginconfig"
	"github.com/leanmesh/leanmesh/filters/telemetry"
)

// conn is one downstream connection. The data path only adds to two
// atomics; everything else happens at open, at close and on scheduler ticks.
type conn struct {
	cfg *Config
	cb  api.ConnectionCallback

	received   atomic.Uint64 // bytes read from the downstream (OnData)
	sent       atomic.Uint64 // bytes written to the downstream (OnWrite)
	lastActive atomic.Int64  // scheduler clock at the last callback
	lastReport atomic.Int64  // scheduler clock at the last report (or open)
	detached   atomic.Bool   // dropped from the scheduler as stale

	// mu orders reports: the scheduler goroutine and the worker's close
	// event may race for the last one.
	mu                     sync.Mutex
	key                    telemetry.Key
	peerAddr               netip.Addr // looked up again until the first report
	worker                 uint32     // registry shard, from the key
	repReceived, repSent   uint64
	opened, closed, active bool

	// Scheduler list links, guarded by the scheduler shard's mutex.
	shard      uint32
	prev, next *conn
	inSet      bool
}

func (c *conn) OnNewConnection() (st api.FilterStatus) {
	defer panicsafe.Recover("tcp.OnNewConnection", &st, api.NetworkFilterContinue, nil)
	cfg := c.cfg
	now := cfg.sched.now.Load()
	c.lastActive.Store(now)
	c.lastReport.Store(now)
	// Read before any close can race with us: both addresses are captured by
	// Envoy when the filter is created (local = original destination after
	// the original_dst listener filter; remote = the direct peer address).
	local := parseAddr(c.cb.StreamInfo().UpstreamLocalAddress())
	remote := parseAddr(c.cb.StreamInfo().UpstreamRemoteAddress())
	var self netip.Addr
	switch cfg.c.Direction {
	case pluginconfig.Inbound:
		c.peerAddr, self = remote, local
	case pluginconfig.Outbound:
		c.peerAddr, self = local, remote
	default: // gateway: the upstream is chosen later by routing; only we are known
		self = local
	}
	c.mu.Lock()
	c.key = telemetry.Key{
		Reporter: cfg.c.Reporter,
		Local:    cfg.localPeer(self),
		Peer:     cfg.lookupPeer(c.peerAddr),
		Protocol: telemetry.ProtocolTCP,
		// The Go network API shows no TLS state: principals and the security
		// policy are unknown, not "none".
		TLSUnknown: true,
	}
	c.worker = keyShard(&c.key)
	c.active = true
	c.mu.Unlock()
	c.shard = uint32(uintptr(unsafe.Pointer(c))>>6) * 0x9E3779B1 >> 26
	if !cfg.sched.add(c) {
		telemetry.Self.Counter("leanmesh_tcp_connections_untracked_total", "", "").Add(1)
	}
	return api.NetworkFilterContinue
}

// OnData counts what the downstream sent us. Only len(buffer) is read: the
// SDK hands us a copy and we never look inside.
func (c *conn) OnData(buffer []byte, endOfStream bool) (st api.FilterStatus) {
	defer panicsafe.Recover("tcp.OnData", &st, api.NetworkFilterContinue, nil)
	c.received.Add(uint64(len(buffer)))
	c.touch()
	return api.NetworkFilterContinue
}

// OnWrite counts what we send to the downstream.
func (c *conn) OnWrite(buffer []byte, endOfStream bool) (st api.FilterStatus) {
	defer panicsafe.Recover("tcp.OnWrite", &st, api.NetworkFilterContinue, nil)
	c.sent.Add(uint64(len(buffer)))
	c.touch()
	return api.NetworkFilterContinue
}

func (c *conn) touch() {
	c.lastActive.Store(c.cfg.sched.now.Load())
	if c.detached.Load() && c.detached.CompareAndSwap(true, false) {
		c.cfg.sched.add(c) // a stale connection came back to life
	}
}

// OnEvent reports the connection's last deltas and closed=1 on the first
// close event, local or remote, whatever happened before (even nothing).
func (c *conn) OnEvent(event api.ConnectionEvent) {
	defer panicsafe.Recover[api.FilterStatus]("tcp.OnEvent", nil, 0, nil)
	if event != api.LocalClose && event != api.RemoteClose {
		return
	}
	c.report(true, c.cfg.sched.now.Load())
	c.cfg.sched.remove(c)
}

// report records opened (first report only), the byte deltas since the
// previous report, and closed (final only). Exactly-once follows from mu and
// the opened/closed flags.
func (c *conn) report(final bool, now int64) {
	c.mu.Lock()
	if c.closed || !c.active {
		c.mu.Unlock()
		return
	}
	var o telemetry.TCPObservation
	if !c.opened {
		// Istio reads the peer until its first report; so do we, in case the
		// table learned the address after the connection opened.
		if c.key.Peer == nil && c.peerAddr.IsValid() {
			if p := c.cfg.lookupPeer(c.peerAddr); p != nil {
				c.key.Peer = p
				c.worker = keyShard(&c.key)
			}
		}
		o.Opened = 1
		c.opened = true
	}
	r, s := c.received.Load(), c.sent.Load()
	o.ReceivedBytes, o.SentBytes = r-c.repReceived, s-c.repSent
	c.repReceived, c.repSent = r, s
	if final {
		o.Closed = 1
		c.closed = true
	}
	c.lastReport.Store(now)
	if o != (telemetry.TCPObservation{}) {
		c.cfg.registry.RecordTCP(c.worker, &c.key, &o)
	}
	c.mu.Unlock()
}

// keyShard spreads label sets over the registry's shards. The network API
// has no worker id; keying by the label set gives each one exactly one
// series, with contention only when two workers record the same label set
// at the same instant.
func keyShard(k *telemetry.Key) uint32 {
	h := uint64(uintptr(unsafe.Pointer(k.Peer)))>>4 ^ uint64(uintptr(unsafe.Pointer(k.Local)))>>3 ^ uint64(k.Reporter)
	return uint32((h * 0x9E3779B97F4A7C15) >> 58)
}

// parseAddr accepts Envoy's address strings ("10.0.0.1:80", "[fd00::1]:80");
// anything else (pipes, internal listeners) is no address.
func parseAddr(s string, _ bool) netip.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func unsafePointer[T any](p *T) unsafe.Pointer { return unsafe.Pointer(p) }
