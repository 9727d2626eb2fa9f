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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leanmesh/leanmesh/controller/lazyxds"
)

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

// Refusal says why a connection, stream or message was refused before any
// of its entries was looked at.
type Refusal int

const (
	RefusedNoClientCert    Refusal = iota // TLS handshake without a client certificate
	RefusedUntrustedCert                  // certificate not signed by the mesh root, or no Istio identity
	RefusedForbidden                      // authenticated, but not a lazy egress's identity
	RefusedStreamLimit                    // MaxStreams streams already open
	RefusedMessageTooLarge                // message over MaxMessageBytes (the stream is closed)
	RefusedConnectionLimit                // MaxConnections connections already open (closed at accept)
	numRefusals
)

var refusalNames = [numRefusals]string{
	"no_client_certificate", "untrusted_certificate", "forbidden_identity", "stream_limit", "message_too_large", "connection_limit",
}

func (r Refusal) String() string { return refusalNames[r] }

// Budgets (docs/security.md explains how they are sized).
const (
	// DefaultMaxMessageBytes: Envoy's gRPC access logger flushes its buffer
	// at buffer_size_bytes (16 KiB default) or at the flush interval, so a
	// message is at most 16 KiB plus one entry; an entry is bounded by the
	// proxy's request-header limit (60 KiB in Istio's gateways) plus its
	// fixed fields. 256 KiB leaves room for both with margin.
	DefaultMaxMessageBytes = 256 << 10
	// DefaultMaxStreams: Envoy opens one stream per worker thread per
	// logger; two egress replicas of 16 workers use 32.
	DefaultMaxStreams = 64
	// DefaultMaxConnections: Envoy multiplexes a worker's streams on one
	// connection, so the egress needs at most MaxStreams; the margin covers
	// connections still in their TLS handshake. Each open connection holds
	// ~100 KiB (gRPC's read and write buffers, TLS records, the window).
	DefaultMaxConnections = 4 * DefaultMaxStreams
	// DefaultInternerBytes bounds each stream's interner (~1,000 distinct
	// names of a busy egress).
	DefaultInternerBytes = 128 << 10
	// DefaultQueueBytes bounds the strings held by queued observations.
	DefaultQueueBytes = 8 << 20
	// maxNameBytes: longer clusters or authorities are no Kubernetes
	// service (a DNS name is at most 253 bytes) and are dropped as
	// bad_destination; a longer peer ID is ignored.
	maxNameBytes = 512
	// observationOverhead approximates an Observation's fixed size.
	observationOverhead = 96
)

// Options configure a Server.
type Options struct {
	// QueueEntries bounds the observations waiting for the graph; default 65536.
	QueueEntries int
	// QueueBytes bounds the bytes they hold; default DefaultQueueBytes.
	QueueBytes int64
	// MaxMessageBytes refuses larger messages (NewGRPCServer); default DefaultMaxMessageBytes.
	MaxMessageBytes int
	// MaxStreams bounds concurrent streams; default DefaultMaxStreams.
	MaxStreams int
	// MaxConnections bounds open connections (Listener); default 4 × MaxStreams.
	MaxConnections int
	// InternerBytes bounds each stream's interner; default DefaultInternerBytes.
	InternerBytes int
	// Authorize admits a stream's authenticated caller. Nil admits every
	// caller, authenticated or not (plaintext tests only); non-nil refuses a
	// caller without a verified identity (see MeshTLS).
	Authorize func(Identity) bool
	// OnRefuse is told about each refusal (the loop logs them, rate-limited).
	OnRefuse func(r Refusal, detail string)
	Now      func() time.Time
}

// Stats is a copy of the server's self-metrics.
type Stats struct {
	Streams   uint64 // streams accepted since start
	Received  uint64 // HTTP entries received
	Processed uint64 // entries applied to the graph
	Learned   uint64 // dependencies learned from them
	Dropped   map[string]uint64
	Refused   map[string]uint64
	Active    int64 // streams open now
}

// Server implements envoy.service.accesslog.v3.AccessLogService.
type Server struct {
	accesslogv3.UnimplementedAccessLogServiceServer

	rec         Recorder
	opts        Options
	max         int64
	queue       chan queuedBatch
	queued      atomic.Int64
	queuedBytes atomic.Int64
	active      atomic.Int64

	streams, received, processed, learned atomic.Uint64
	dropped                               [numReasons]atomic.Uint64
	refused                               [numRefusals]atomic.Uint64
}

type queuedBatch struct {
	obs   []lazyxds.Observation
	bytes int64
}

// NewServer returns a server feeding rec. Call Run to start applying entries.
func NewServer(rec Recorder, opts Options) *Server {
	if opts.QueueEntries <= 0 {
		opts.QueueEntries = 1 << 16
	}
	if opts.QueueBytes <= 0 {
		opts.QueueBytes = DefaultQueueBytes
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = DefaultMaxStreams
	}
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = 4 * opts.MaxStreams
	}
	if opts.InternerBytes <= 0 {
		opts.InternerBytes = DefaultInternerBytes
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Server{
		rec: rec, opts: opts, max: int64(opts.QueueEntries),
		// Every queued batch holds at least one entry, so this never blocks
		// before the entry bound is hit.
		queue: make(chan queuedBatch, min(opts.QueueEntries, 4096)),
	}
}

// Refuse counts a refusal and reports it to Options.OnRefuse.
func (s *Server) Refuse(r Refusal, detail string) {
	s.refused[r].Add(1)
	if s.opts.OnRefuse != nil {
		s.opts.OnRefuse(r, detail)
	}
}

// admit checks a new stream's caller and the stream budget. The returned
// release must be called when the stream ends.
func (s *Server) admit(ctx context.Context) (release func(), err error) {
	if s.opts.Authorize != nil {
		id, ok := PeerIdentity(ctx)
		if !ok {
			s.Refuse(RefusedUntrustedCert, "stream without a verified mesh identity")
			return nil, status.Error(codes.Unauthenticated, "mesh client certificate required")
		}
		if !s.opts.Authorize(id) {
			s.Refuse(RefusedForbidden, id.String())
			return nil, status.Error(codes.PermissionDenied, "not a lazy egress")
		}
	}
	if s.active.Add(1) > int64(s.opts.MaxStreams) {
		s.active.Add(-1)
		s.Refuse(RefusedStreamLimit, "")
		return nil, status.Errorf(codes.ResourceExhausted, "at most %d access-log streams", s.opts.MaxStreams)
	}
	s.streams.Add(1)
	return func() { s.active.Add(-1) }, nil
}

// recvErr counts a message refused for its size (gRPC refuses it from its
// length prefix, before reading or allocating the body).
func (s *Server) recvErr(err error) error {
	if status.Code(err) == codes.ResourceExhausted {
		s.Refuse(RefusedMessageTooLarge, err.Error())
	}
	return err
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
		case qb := <-s.queue:
			batch := qb.obs
			s.queued.Add(-int64(len(batch)))
			s.queuedBytes.Add(-qb.bytes)
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
	release, err := s.admit(stream.Context())
	if err != nil {
		return err
	}
	defer release()
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&accesslogv3.StreamAccessLogsResponse{})
		}
		if err != nil {
			return s.recvErr(err)
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
		at := s.opts.Now()
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
	if len(f.cluster) > maxNameBytes || len(f.authority) > maxNameBytes {
		s.dropped[ReasonBadDestination].Add(1)
		return lazyxds.Observation{}, false
	}
	if len(f.peerID) > maxNameBytes {
		f.peerID = ""
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
	var size int64
	for i := range batch {
		size += int64(len(batch[i].Cluster) + len(batch[i].Authority) + observationOverhead)
	}
	full := func() {
		s.queued.Add(-n)
		s.queuedBytes.Add(-size)
		s.dropped[ReasonQueueFull].Add(uint64(n))
	}
	entries, bytes := s.queued.Add(n), s.queuedBytes.Add(size)
	if entries > s.max || bytes > s.opts.QueueBytes {
		full()
		return
	}
	select {
	case s.queue <- queuedBatch{obs: batch, bytes: size}:
	default:
		full()
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
		Learned: s.learned.Load(), Dropped: map[string]uint64{}, Refused: map[string]uint64{},
		Active: s.active.Load(),
	}
	for r := range numReasons {
		st.Dropped[r.String()] = s.dropped[r].Load()
	}
	for r := range numRefusals {
		st.Refused[r.String()] = s.refused[r].Load()
	}
	return st
}
