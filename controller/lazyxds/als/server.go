// Package als receives the lazy egress gateway's access logs over Envoy's gRPC
// Access Log Service and feeds them to the dependency graph.
//
// The stream goroutines only decode and reduce entries to Observations; one
// Run goroutine applies them to the graph. Between the two is a bounded queue
// (Options.QueueEntries observations): when it is full the whole message is
// dropped and counted as ReasonQueueFull. Dropping rather than blocking keeps a
// flooding egress from stalling other streams or growing memory, and costs
// little: a dropped first call is logged again by the next call through the
// egress, since the dependency is not visible yet.
package als

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"

	"github.com/leanmesh/leanmesh/controller/lazyxds"
)

// PeerMetadataIDHeader is the metadata-exchange header Istio sidecars add to
// mesh requests ("sidecar~<ip>~<pod>.<ns>~<ns>.svc.<domain>"). The egress's
// access logger is configured to log it, so a caller can be identified even
// when the downstream address is not its pod IP.
const PeerMetadataIDHeader = "x-envoy-peer-metadata-id"

// Recorder is the part of lazyxds.Graph the server needs.
type Recorder interface {
	Record(batch []lazyxds.Observation) lazyxds.RecordResult
}

// Reason says why an entry did not become a dependency.
type Reason int

const (
	ReasonNoCommonProperties Reason = iota // entry without common_properties
	ReasonNoCallerAddress                  // no usable downstream address or peer metadata
	ReasonBadDestination                   // neither an outbound cluster nor a parseable authority
	ReasonTCPEntry                         // TCP access logs: lazy loading is HTTP only
	ReasonQueueFull                        // graph queue full: dropped unprocessed
	ReasonUnknownCaller                    // caller IP is no known workload
	ReasonUnknownService                   // destination is no known service
	ReasonNotLazy                          // caller is not lazy
	ReasonMalformedMessage                 // fast path: undecodable message (its entries are lost)
	numReasons
)

var reasonNames = [numReasons]string{
	"no_common_properties", "no_caller_address", "bad_destination", "tcp_entry",
	"queue_full", "unknown_caller", "unknown_service", "not_lazy", "malformed_message",
}

func (r Reason) String() string { return reasonNames[r] }

// Options configure a Server.
type Options struct {
	// QueueEntries bounds the observations waiting for the graph; default 65536
	// (about 10 MB at worst).
	QueueEntries int
	Now          func() time.Time
}

// Stats is a copy of the server's self-metrics.
type Stats struct {
	Streams   uint64 // streams accepted since start
	Received  uint64 // HTTP entries received
	Processed uint64 // entries applied to the graph
	Learned   uint64 // dependencies learned from them
	Dropped   map[string]uint64
}

// Server implements envoy.service.accesslog.v3.AccessLogService.
type Server struct {
	accesslogv3.UnimplementedAccessLogServiceServer

	rec    Recorder
	now    func() time.Time
	max    int64
	queue  chan []lazyxds.Observation
	queued atomic.Int64

	streams, received, processed, learned atomic.Uint64
	dropped                               [numReasons]atomic.Uint64
}

// NewServer returns a server feeding rec. Call Run to start applying entries.
func NewServer(rec Recorder, opts Options) *Server {
	if opts.QueueEntries <= 0 {
		opts.QueueEntries = 1 << 16
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Server{
		rec: rec, now: opts.Now, max: int64(opts.QueueEntries),
		// Every queued batch holds at least one entry, so this never blocks
		// before the entry bound is hit.
		queue: make(chan []lazyxds.Observation, min(opts.QueueEntries, 4096)),
	}
}

// Register adds the typed AccessLogService (go-control-plane's generated
// types) to any gRPC server. NewGRPCServer is about 4× faster.
func (s *Server) Register(g *grpc.Server) { accesslogv3.RegisterAccessLogServiceServer(g, s) }

// Run applies queued observations to the graph until ctx is done.
func (s *Server) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case batch := <-s.queue:
			s.queued.Add(-int64(len(batch)))
			res := s.rec.Record(batch)
			s.dropped[ReasonUnknownCaller].Add(uint64(res.UnknownCaller))
			s.dropped[ReasonUnknownService].Add(uint64(res.UnknownService))
			s.dropped[ReasonNotLazy].Add(uint64(res.NotLazy))
			s.learned.Add(uint64(res.Learned))
			s.processed.Add(uint64(len(batch)))
		}
	}
}

// StreamAccessLogs reads one Envoy stream until it ends (typed path). Envoy
// reconnects a broken stream by opening a new one; nothing is kept per
// stream, so that needs no special handling.
func (s *Server) StreamAccessLogs(stream accesslogv3.AccessLogService_StreamAccessLogsServer) error {
	s.streams.Add(1)
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&accesslogv3.StreamAccessLogsResponse{})
		}
		if err != nil {
			return err
		}
		if tcp := msg.GetTcpLogs(); tcp != nil {
			s.dropped[ReasonTCPEntry].Add(uint64(len(tcp.GetLogEntry())))
			continue
		}
		entries := msg.GetHttpLogs().GetLogEntry()
		if len(entries) == 0 {
			continue
		}
		s.received.Add(uint64(len(entries)))
		at := s.now()
		batch := make([]lazyxds.Observation, 0, len(entries))
		for _, e := range entries {
			if o, ok := s.observe(typedFields(e), at); ok {
				batch = append(batch, o)
			}
		}
		s.enqueue(batch)
	}
}

// observe validates one entry, counting it by reason when it is unusable.
func (s *Server) observe(f fields, at time.Time) (lazyxds.Observation, bool) {
	if !f.hasCommon {
		s.dropped[ReasonNoCommonProperties].Add(1)
		return lazyxds.Observation{}, false
	}
	o := lazyxds.Observation{At: at, Cluster: f.cluster, Authority: f.authority}
	o.Caller = parseIP(f.downstream)
	if !o.Caller.IsValid() {
		o.Caller = parseIP(f.direct)
	}
	if f.peerID != "" {
		o.PeerIP = peerIP(f.peerID)
	}
	if !o.Caller.IsValid() && !o.PeerIP.IsValid() {
		s.dropped[ReasonNoCallerAddress].Add(1)
		return lazyxds.Observation{}, false
	}
	if _, _, ok := lazyxds.ParseCluster(o.Cluster); !ok {
		if _, _, ok := lazyxds.SplitAuthority(o.Authority); !ok {
			s.dropped[ReasonBadDestination].Add(1)
			return lazyxds.Observation{}, false
		}
	}
	return o, true
}

func (s *Server) enqueue(batch []lazyxds.Observation) {
	n := int64(len(batch))
	if n == 0 {
		return
	}
	if s.queued.Add(n) > s.max {
		s.queued.Add(-n)
		s.dropped[ReasonQueueFull].Add(uint64(n))
		return
	}
	select {
	case s.queue <- batch:
	default:
		s.queued.Add(-n)
		s.dropped[ReasonQueueFull].Add(uint64(n))
	}
}

func parseIP(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return ip.Unmap()
}

// peerIP extracts the IP of an Istio node ID "sidecar~10.1.2.3~pod.ns~ns.svc.cluster.local".
func peerIP(id string) netip.Addr {
	_, rest, ok := strings.Cut(id, "~")
	if !ok {
		return netip.Addr{}
	}
	addr, _, _ := strings.Cut(rest, "~")
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.Addr{}
	}
	return ip
}

// Stats returns the server's self-metrics.
func (s *Server) Stats() Stats {
	st := Stats{
		Streams: s.streams.Load(), Received: s.received.Load(), Processed: s.processed.Load(),
		Learned: s.learned.Load(), Dropped: map[string]uint64{},
	}
	for r := range numReasons {
		st.Dropped[r.String()] = s.dropped[r].Load()
	}
	return st
}
